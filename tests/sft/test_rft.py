"""RFT's training rows: each accepted (prompt, answer) once; no accepted answer is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlaif_code.core.artifacts import InputError
from rlaif_code.sft.rft import RFTConfig, accepted_rows, run


def write_feedback(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text("".join(json.dumps({"example_id": f"e{i}", "prompt": p, "text": t, "label": label}) + "\n"
                            for i, (p, t, label) in enumerate(rows)))
    return path


def test_accepted_answers_once_each_in_file_order(tmp_path: Path) -> None:
    path = write_feedback(tmp_path / "feedback.jsonl", [
        ("p1", " a", "accepted"), ("p1", " a ", "accepted"), ("p1", " b", "rejected"), ("p2", " c", "accepted"),
        ("p2", "  ", "accepted")])
    assert [(r["prompt"], r["target"]) for r in accepted_rows(path)] == [("p1", " a"), ("p2", " c")]
    assert accepted_rows(tmp_path)[0]["target"] == " a"  # the feedback stage's folder works too


def test_no_accepted_answer_and_disabled_rft(tmp_path: Path) -> None:
    path = write_feedback(tmp_path / "feedback.jsonl", [("p1", " a", "rejected")])
    with pytest.raises(InputError, match="no accepted answer.*rft.enabled: false"):
        accepted_rows(path)
    assert run(RFTConfig(enabled=False, feedback=str(path), out_dir=str(tmp_path / "rft")))["skipped"]
    assert not (tmp_path / "rft").exists()
