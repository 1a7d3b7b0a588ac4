from pathlib import Path

from rlaif_code.sandbox.verdicts import ExecSettings, executability
from tiny import make_minimal_venv


def test_each_distinct_snippet_runs_once_per_process(tmp_path: Path) -> None:
    env = tmp_path / "env"
    make_minimal_venv(env)
    codes = ["print(1)", "print(1)", "raise ValueError('no')"]
    settings = ExecSettings(tier="run", mode="hermetic", workers=2, env=str(env), timeout=30, data=None)
    first, first_summary = executability(codes, settings)
    assert first_summary["snippets_run"] == 2  # the repeated snippet ran once
    assert [bool(v.run) for v in first] == [True, True, False]
    again, again_summary = executability(codes[::-1], settings)
    assert again_summary["snippets_run"] == 0 and again_summary["run"] == first_summary["run"]
    assert [bool(v.run) for v in again] == [False, True, True]
