"""Progress for the long loops (sampling, judge requests, executing snippets).

On a terminal, a rich bar redrawn in place. Elsewhere (a background run's log, CI), where a
redrawn bar shows nothing until it ends, a plain line every `every_s` seconds and one at the end.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator


class Bar:
    def __init__(self, description: str, total: int, progress: Any = None, task: Any = None,
                 every_s: float = 30.0) -> None:
        self.description = description
        self.total = total
        self.completed = 0
        self._progress, self._task = progress, task
        self._every_s = every_s
        self._last_line = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.completed += n
        if self._progress is not None:
            self._progress.update(self._task, advance=n)
            return
        now = time.monotonic()
        if now - self._last_line >= self._every_s or self.completed >= self.total:
            self._last_line = now
            print(f"{self.description}: {self.completed}/{self.total}", file=sys.stderr, flush=True)


@contextmanager
def progress_bar(description: str, total: int, *, every_s: float = 30.0) -> Iterator[Bar]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    if not console.is_terminal or total <= 0:
        yield Bar(description, total, every_s=every_s)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console) as progress:
        yield Bar(description, total, progress, progress.add_task(description, total=total))
