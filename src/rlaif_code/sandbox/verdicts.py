"""Snippets judged in batches: the settings, and each distinct snippet run once per process.

Shared by the evaluator's `exec` metric and the feedback stage's `executes` check, so that a
rubric's "does the code run?" means exactly what the evaluation's executability means.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlaif_code.core.progress import progress_bar
from rlaif_code.sandbox.env import ENV_REPORT, find_exec_python
from rlaif_code.sandbox.runner import Limits, Sandbox
from rlaif_code.sandbox.tiers import ExecutabilityChecker, SnippetVerdict, summarize


@dataclass(frozen=True)
class ExecSettings:
    """How snippets are judged. No defaults here: the configs that build it hold them (EvalConfig's exec_* keys,
    the feedback stage's tools.exec_* keys)."""

    tier: Literal["parse", "static", "run"]
    mode: Literal["hermetic", "real"]
    workers: int
    env: str | None  # exec env dir; None: $RLAIF_EXEC_ENV, else ~/.cache/rlaif-code/exec-env
    timeout: float  # wall-clock seconds per snippet
    data: str | None  # Gorilla data dir (the ids hermetic mode knows); None: $RLAIF_DATA
    # a user's API database, whose ids alone hermetic mode then knows; None: Gorilla's three. A default,
    # unlike the rest: the callers that predate it (PPO's dev selection) know no user database.
    api_db: str | None = None


def sandbox_version(interpreter: Path) -> str:
    """What a verdict depends on besides its snippet and settings: this package's code (the hermetic hooks
    and stand-ins decide what a snippet can do) and the exec env's record of its packages. Part of every
    stored verdict's cache key, so that a change to either never serves verdicts of the old sandbox."""
    digest = hashlib.sha256()
    package = Path(__file__).parent
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".txt") and "__pycache__" not in path.parts:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    # The interpreter is <env>/bin/python; the env records what installed beside it
    report = Path(interpreter).parent.parent / ENV_REPORT
    digest.update(report.read_bytes() if report.is_file() else b"no env report")
    return digest.hexdigest()[:16]


# Verdicts by (snippet, settings) for the life of the process. The files of one run share their
# control (the reference code of every eval item), a reference-answer file is that control again, and
# greedy answers repeat: each distinct snippet runs once.
_VERDICTS: dict[tuple[str, tuple[str, ...]], SnippetVerdict] = {}


def executability(codes: list[str], settings: ExecSettings,
                  python: str | Path | None = None) -> tuple[list[SnippetVerdict], dict[str, Any]]:
    """Judge `codes` up to `settings.tier`; (per-snippet verdicts, summary) — usable outside `rlaif eval`."""
    known = None
    if settings.mode == "hermetic":
        from rlaif_code.data.source import DataSource
        from rlaif_code.sandbox.hub_ids import known_hub_ids

        known = known_hub_ids(DataSource.resolve(settings.data), settings.api_db)
    interpreter = Path(python) if python else find_exec_python(settings.env)
    key = (settings.tier, settings.mode, str(interpreter), str(settings.timeout), str(settings.data),
           str(settings.api_db))
    todo = sorted({code for code in codes if (code, key) not in _VERDICTS})
    # The one explicit opt-in to running without a sandbox from the command line.
    unsandboxed = os.environ.get("RLAIF_EXEC_ALLOW_UNSANDBOXED") == "1"
    with Sandbox(interpreter, mode=settings.mode, known_ids=known, limits=Limits(timeout=settings.timeout),
                 allow_unsandboxed=unsandboxed) as sandbox:
        checker = ExecutabilityChecker(sandbox, workers=settings.workers)
        if todo:
            with progress_bar("exec: snippets run", len(todo)) as bar:
                fresh = checker.check(todo, settings.tier, progress=lambda _index, _result: bar.advance())
            _VERDICTS.update({(code, key): verdict for code, verdict in zip(todo, fresh)})
        isolation = sandbox.isolation
    verdicts = [_VERDICTS[(code, key)] for code in codes]
    summary = summarize(verdicts, settings.tier)
    summary["isolation"] = isolation
    summary["import_names_checked"] = checker.names_checked
    summary["snippets_run"] = len(todo)
    summary["interpreter"] = str(interpreter)
    return verdicts, summary
