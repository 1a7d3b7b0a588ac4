import json
from dataclasses import dataclass

import pytest

from rlaif_code.artifacts import (
    InputError,
    JsonlAppender,
    atomic_write_json,
    read_json,
    read_jsonl,
    read_stage_record,
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
