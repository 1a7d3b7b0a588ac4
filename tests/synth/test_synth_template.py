"""The template generator and the synth stage's filter, record and skip, on invented and real APIs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlaif_code.core.artifacts import read_jsonl, read_stage_record
from rlaif_code.core.config import ConfigError
from rlaif_code.core.registry import RegistryError
from rlaif_code.data.apibench import load_examples
from rlaif_code.synth import SynthConfig, run
from rlaif_code.synth.generators import GENERATORS
from rlaif_code.synth.overlap import OverlapIndex
from tiny import CUSTOM_APIS, write_custom_hub


def test_overlap_is_per_eval_instruction() -> None:
    index = OverlapIndex(["find the widgets in this photo", "sell more widgets next week"], n=2)
    assert index.overlap("find the widgets in this photo please") == pytest.approx(5 / 6)
    assert index.overlap("the widgets sell more") == pytest.approx(1 / 3)  # a third in each item: not pooled
    assert index.overlap("nothing alike") == 0.0
    assert OverlapIndex(["hi"], n=4).overlap("Hi!") == 1.0  # shorter than n: equal or not


def test_generators_fail_loudly_on_unknown_names() -> None:
    with pytest.raises(RegistryError, match="unknown synth generator 'gpt'"):
        GENERATORS.get("gpt")
    with pytest.raises(RegistryError, match="already registered"):
        GENERATORS.add("template", lambda apis, cfg: None)
    with pytest.raises(ConfigError, match="'generators' unknown generator"):
        SynthConfig(generators=["template", "gpt"])


def test_template_examples_read_back_as_training_rows(tmp_path: Path) -> None:
    api_db, eval_file = write_custom_hub(tmp_path)
    cfg = SynthConfig(hub="custom", api_db=str(api_db), eval_file=str(eval_file), per_api=6,
                      out_dir=str(tmp_path / "synth"))
    metrics = run(cfg)
    rows = read_jsonl(tmp_path / "synth" / "synth.jsonl")
    examples = load_examples(tmp_path / "synth" / "synth.jsonl", "custom")
    assert metrics["n_examples"] == len(rows) == len(examples) == 6 * len(CUSTOM_APIS)
    assert {row["generator"] for row in rows} == {"template"}
    assert {row["source_api"] for row in rows} == {api["api_name"] for api in CUSTOM_APIS}
    for row, example in zip(rows, examples):
        api = CUSTOM_APIS[row["source_line"] - 1]
        assert example.complete and example.reference_api == api
        assert (example.domain, example.api_call, example.provider) == (api["domain"], api["api_call"],
                                                                        api["framework"])
    forecaster = next(e for e in examples if e.reference_api["api_name"] == "acme_sdk.Forecaster")
    # No example code: the call after the import its requirements name.
    assert forecaster.code == "import acme_sdk\nmodel = acme_sdk.Forecaster(horizon=7, region='eu')"
    record = read_stage_record(tmp_path / "synth")
    assert record["metrics"]["n_eval_instructions"] == 4 and record["metrics"]["seconds"] >= 0
    assert run(cfg)["skipped"] is True


def test_instructions_close_to_eval_ones_are_removed_and_counted(tmp_path: Path) -> None:
    api_db, eval_file = write_custom_hub(tmp_path)
    # An eval item phrased as the template phrases one of its instructions.
    near = {"code": "###Instruction: Write Python code that uses acme/ears for speech recognition today.\n"
                    "###Output: <<<domain>>>: Audio Speech Recognition\n<<<api_call>>>: "
                    "torch.hub.load('acme/zoo', 'ears', pretrained=True)\n<<<api_provider>>>: Acme Audio\n"
                    "<<<explanation>>>: x\n<<<code>>>: x", "api_call": CUSTOM_APIS[2]["api_call"]}
    with eval_file.open("a") as handle:
        handle.write(json.dumps(near) + "\n")
    metrics = run(SynthConfig(hub="custom", api_db=str(api_db), eval_file=str(eval_file), per_api=6,
                              max_overlap=0.5, out_dir=str(tmp_path / "synth")))
    assert metrics["removed_by_overlap"] == 1 and metrics["n_examples"] == 6 * len(CUSTOM_APIS) - 1
    assert metrics["max_overlap_after_filter"] < 0.5
    kept = [row["code"] for row in read_jsonl(tmp_path / "synth" / "synth.jsonl")]
    assert not any("uses acme/ears for speech recognition." in text for text in kept)


def test_template_on_a_huggingface_api(tmp_path: Path, gorilla_data: Path) -> None:
    line = (gorilla_data / "api" / "huggingface_api.jsonl").read_text().splitlines()[1]  # dmis-lab/biobert-v1.1
    api_db = tmp_path / "one.jsonl"
    api_db.write_text(line + "\n")
    metrics = run(SynthConfig(hub="hf", api_db=str(api_db), per_api=2, out_dir=str(tmp_path / "synth")))
    assert metrics["n_examples"] == 2 and metrics["n_eval_instructions"] == 911  # the hub's eval file
    (first, _second) = load_examples(tmp_path / "synth" / "synth.jsonl", "hf")
    assert first.api_call == "AutoModel.from_pretrained('dmis-lab/biobert-v1.1')"
    assert first.code == ("from transformers import AutoModel\n"
                          "model = AutoModel.from_pretrained('dmis-lab/biobert-v1.1')")
