"""Sample stage on a tiny random model: rows, resume, and where answers stop."""

from __future__ import annotations

import json

import pytest

from rlaif_code.cli import main
from rlaif_code.core.artifacts import InputError, read_jsonl, read_stage_record
from rlaif_code.data.parse import FIELDS
from rlaif_code.sample import stage as sample
from rlaif_code.sample.stage import SampleConfig
from tiny import make_data_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, gorilla_data):
    return make_data_dir(tmp_path_factory.mktemp("data"), gorilla_data, max_train=4, max_eval=4)


def _cfg(tiny_dir, data_dir, out, **kwargs) -> SampleConfig:
    base = dict(model=str(tiny_dir), data_dir=str(data_dir), split="eval", out_dir=str(out), num_samples=2,
                max_new_tokens=8, batch_size=3, temperature=0.8, device="cpu")
    return SampleConfig(**{**base, **kwargs})


def test_sample_cli_smoke(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "sample"
    assert main(["sample", "--model", str(tiny_dir), "--data_dir", str(data_dir), "--split", "eval",
                 "--out_dir", str(out), "--num_samples", "2", "--max_examples", "3", "--max_new_tokens", "8",
                 "--batch_size", "4", "--device", "cpu"]) == 0
    rows = read_jsonl(out / "samples.jsonl")
    assert len(rows) == 6
    assert {(r["example_id"], r["sample_id"]) for r in rows} == {
        (e["example_id"], s) for e in read_jsonl(data_dir / "eval.jsonl")[:3] for s in (0, 1)}
    for row in rows:
        assert row["prompt"].endswith("###Output:") and isinstance(row["text"], str)
        assert set(row["parsed"]) == set(FIELDS)
        assert 1 <= row["n_tokens"] <= 8 and isinstance(row["finished"], bool)
        assert row["question_id"] is not None
    metrics = read_stage_record(out)["metrics"]
    assert metrics["n_samples"] == 6 and metrics["tokens_per_s"] > 0


def test_resume_skips_written_pairs(tiny_dir, data_dir, tmp_path, monkeypatch):
    out = tmp_path / "sample"
    first = sample.run(_cfg(tiny_dir, data_dir, out, max_examples=2))
    assert first["n_generated"] == 4
    with (out / "samples.jsonl").open("a") as handle:  # what a kill mid-write leaves behind
        handle.write('{"example_id": "torn')
    asked: list[str] = []
    real = sample.generate_stream

    def counting(model, tokenizer, prompts, **kwargs):
        asked.extend(prompts)
        return real(model, tokenizer, prompts, **kwargs)

    monkeypatch.setattr(sample, "generate_stream", counting)
    second = sample.run(_cfg(tiny_dir, data_dir, out, max_examples=3))
    assert second["n_resumed"] == 4 and second["n_generated"] == 2
    third_prompt = read_jsonl(data_dir / "eval.jsonl")[2]["prompt"]
    assert asked == [third_prompt, third_prompt]
    rows = read_jsonl(out / "samples.jsonl")
    pairs = [(r["example_id"], r["sample_id"]) for r in rows]
    assert len(rows) == 6 and len(set(pairs)) == 6


def test_resume_refuses_samples_from_other_settings(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "sample"
    sample.run(_cfg(tiny_dir, data_dir, out, max_examples=1, num_samples=1))
    with pytest.raises(InputError, match="temperature"):
        sample.run(_cfg(tiny_dir, data_dir, out, max_examples=2, num_samples=1, temperature=0.5))


def test_answers_do_not_depend_on_the_batch_size(tiny_dir, data_dir, tmp_path):
    files = []
    for batch_size in (1, 3, 16):
        out = tmp_path / f"batch{batch_size}"
        sample.run(_cfg(tiny_dir, data_dir, out, batch_size=batch_size, num_samples=3, max_new_tokens=12))
        files.append((out / "samples.jsonl").read_bytes())
    assert files[0] == files[1] == files[2]
    rows = read_jsonl(tmp_path / "batch1" / "samples.jsonl")
    assert len({row["text"] for row in rows}) == len(rows)  # every (example, sample_id) draws its own answer


def test_a_killed_run_resumes_into_the_file_an_unbroken_run_writes(tiny_dir, data_dir, tmp_path, monkeypatch):
    unbroken = tmp_path / "unbroken"
    sample.run(_cfg(tiny_dir, data_dir, unbroken))
    killed = tmp_path / "killed"
    real = sample.generate_stream

    def dies_after_three_answers(*args, **kwargs):
        for count, answer in enumerate(real(*args, **kwargs)):
            if count == 3:
                raise KeyboardInterrupt
            yield answer

    monkeypatch.setattr(sample, "generate_stream", dies_after_three_answers)
    with pytest.raises(KeyboardInterrupt):
        sample.run(_cfg(tiny_dir, data_dir, killed))
    written = len(read_jsonl(killed / "samples.jsonl"))
    assert 0 < written <= 3
    monkeypatch.setattr(sample, "generate_stream", real)
    assert sample.run(_cfg(tiny_dir, data_dir, killed, batch_size=2))["n_resumed"] == written
    assert (killed / "samples.jsonl").read_bytes() == (unbroken / "samples.jsonl").read_bytes()


def test_bad_prompt_files_name_the_line(tiny_dir, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "###Instruction: a\n###Output:"}) + "\n"
                    + json.dumps({"question": "no prompt here"}) + "\n")
    with pytest.raises(InputError, match=r"prompts.jsonl:2: .*'prompt'"):
        sample.run(SampleConfig(model=str(tiny_dir), input_file=str(path), out_dir=str(tmp_path / "o")))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError, match="no prompts"):
        sample.run(SampleConfig(model=str(tiny_dir), input_file=str(empty), out_dir=str(tmp_path / "o")))


def test_any_prompt_file_works_and_ids_come_from_lines(tiny_dir, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "###Instruction: load a model\n###Output:"}) + "\n")
    metrics = sample.run(SampleConfig(model=str(tiny_dir), input_file=str(path), out_dir=str(tmp_path / "o"),
                                      num_samples=1, temperature=0.0, max_new_tokens=4, device="cpu"))
    assert metrics["n_samples"] == 1
    (row,) = read_jsonl(tmp_path / "o" / "samples.jsonl")
    assert row["example_id"] == "prompts:1" and row["question_id"] == 1
