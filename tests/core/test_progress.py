"""Progress for long loops: a rich bar on a terminal, periodic lines in a log."""

from __future__ import annotations

import pytest

from rlaif_code.core.progress import progress_bar


def test_without_a_terminal_progress_prints_lines_and_the_final_count(capsys: pytest.CaptureFixture) -> None:
    with progress_bar("sample eval_sft", 5, every_s=0.0) as bar:
        for _ in range(5):
            bar.advance()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == "sample eval_sft: 5/5" and len(lines) == 5 and bar.completed == 5


def test_lines_are_rate_limited(capsys: pytest.CaptureFixture) -> None:
    with progress_bar("judge", 100, every_s=3600.0) as bar:
        bar.advance(40)
        bar.advance(60)
    assert capsys.readouterr().err.strip().splitlines() == ["judge: 100/100"]
