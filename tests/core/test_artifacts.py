import json
from dataclasses import dataclass
from typing import ClassVar

import pytest

from rlaif_code.core.artifacts import (
    RUN_IDENTITY,
    InputError,
    JsonlAppender,
    atomic_write_json,
    claim_run,
    content_inputs,
    finished_result,
    read_json,
    read_jsonl,
    read_stage_record,
    run_identity,
    stage_is_done,
    write_stage_record,
)


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(InputError, match=r"x\.jsonl:2"):
        read_jsonl(path)


def test_non_object_line_is_an_error(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n[1]\n')
    with pytest.raises(InputError, match=r"x\.jsonl:2: expected a JSON object"):
        read_jsonl(path)


def test_appender_cuts_a_torn_tail_and_resumes(tmp_path):
    path = tmp_path / "rows.jsonl"
    with JsonlAppender(path) as out:
        out.write({"id": 1})
        out.write({"id": 2})
    with path.open("a") as handle:  # what a process killed mid-write leaves behind
        handle.write('{"id": 3, "te')
    assert [r["id"] for r in read_jsonl(path, tolerate_torn_tail=True)] == [1, 2]
    with JsonlAppender(path) as out:
        assert [r["id"] for r in out.existing()] == [1, 2]
        out.write({"id": 3})
    assert [r["id"] for r in read_jsonl(path)] == [1, 2, 3]


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert read_json(tmp_path / "a.json") == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


@dataclass
class Cfg:
    k: int = 1


def test_stage_record_carries_config_and_detects_staleness(tmp_path):
    (tmp_path / "out.txt").write_text("hello")
    write_stage_record(tmp_path, "demo", Cfg(), metrics={"m": 1.0}, outputs=["out.txt"])
    record = read_stage_record(tmp_path)
    assert record["config"] == {"k": 1} and record["metrics"] == {"m": 1.0} and "out.txt" in record["outputs"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"m": 1.0}
    assert stage_is_done(tmp_path, "demo", Cfg())
    assert not stage_is_done(tmp_path, "demo", Cfg(k=2))
    assert not stage_is_done(tmp_path, "other", Cfg())


@dataclass
class Resumable:
    lr: float = 1e-3
    max_steps: int = 10
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({"max_steps"})


@dataclass
class WithInputs:
    rubric: str = "a"

    def fingerprint_inputs(self) -> dict[str, str]:
        return {"rubric_sha256": f"digest-of-{self.rubric}"}


def test_finished_result_is_the_metrics_of_exactly_this_config(tmp_path):
    assert finished_result(tmp_path, "demo", Cfg()) is None
    write_stage_record(tmp_path, "demo", Cfg(), metrics={"m": 1.0})
    assert finished_result(tmp_path, "demo", Cfg()) == {"m": 1.0, "skipped": True}
    assert finished_result(tmp_path, "demo", Cfg(k=2)) is None
    assert finished_result(tmp_path, "other", Cfg()) is None


def test_content_inputs_are_part_of_a_stages_identity(tmp_path):
    assert content_inputs(Cfg()) == {}
    assert content_inputs(WithInputs()) == {"rubric_sha256": "digest-of-a"}
    write_stage_record(tmp_path, "demo", WithInputs())
    assert read_stage_record(tmp_path)["inputs"] == {"rubric_sha256": "digest-of-a"}
    assert stage_is_done(tmp_path, "demo", WithInputs())

    class Edited(WithInputs):  # same config, other file content
        def fingerprint_inputs(self) -> dict[str, str]:
            return {"rubric_sha256": "digest-of-the-edited-file"}

    assert not stage_is_done(tmp_path, "demo", Edited())


def test_run_identity_leaves_out_the_resumable_fields():
    assert run_identity(Resumable()) == {"lr": 1e-3}
    assert run_identity(Cfg(k=3)) == {"k": 3}


def test_claim_run_refuses_work_of_another_identity_and_allows_resumable_changes(tmp_path):
    claim_run(tmp_path, Resumable(), resuming=False)
    assert read_json(tmp_path / RUN_IDENTITY) == {"lr": 1e-3}
    claim_run(tmp_path, Resumable(max_steps=50), resuming=True)  # a longer run continues the same work
    with pytest.raises(InputError, match=r"other settings \(lr\)"):
        claim_run(tmp_path, Resumable(lr=0.5), resuming=True)
    assert read_json(tmp_path / RUN_IDENTITY) == {"lr": 1e-3}  # a refused claim changes nothing
    claim_run(tmp_path, Resumable(lr=0.5), resuming=False)  # starting over takes the folder
    assert read_json(tmp_path / RUN_IDENTITY) == {"lr": 0.5}


def test_claim_run_refuses_to_resume_work_that_has_no_identity(tmp_path):
    with pytest.raises(InputError, match="other settings"):
        claim_run(tmp_path, Resumable(), resuming=True)
