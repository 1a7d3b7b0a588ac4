"""API databases: a user's own file validated on load, the custom hub's matching rule, its examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlaif_code.core.artifacts import InputError
from rlaif_code.core.config import ConfigError
from rlaif_code.data import DataConfig
from rlaif_code.data.api_db import read_api_db
from rlaif_code.data.apibench import load_api_database, load_examples
from rlaif_code.data.ast_match import AstMatcher
from rlaif_code.data.source import DataSource
from rlaif_code.data.stage import run
from tiny import CUSTOM_APIS, custom_answer, write_custom_hub


def _db_with(tmp_path: Path, bad: dict) -> Path:
    path = tmp_path / "db.jsonl"
    path.write_text(json.dumps(CUSTOM_APIS[0]) + "\n" + json.dumps(bad) + "\n")
    return path


@pytest.mark.parametrize(("change", "message"), [
    ({"description": None}, "field 'description' must be a non-empty string"),
    ({"domain": "  "}, "field 'domain' must be a non-empty string"),
    ({"functionality": {"task": "x"}}, "field 'functionality' must be a string or a list of strings"),
    ({"api_arguments": 3}, "field 'api_arguments' must be a string, a list, an object or null, got int"),
    ({"api_call": "AutoModel.from_pretrained('a"}, "field 'api_call' is not Python"),
    ({"api_call": "acme_sdk.models"}, "field 'api_call' is not a call"),
])
def test_a_mistyped_field_is_named_with_file_and_line(tmp_path: Path, change: dict, message: str) -> None:
    path = _db_with(tmp_path, {**CUSTOM_APIS[1], **change})
    with pytest.raises(InputError, match=rf"^{path}:2: {message}"):
        read_api_db(path)


def test_a_missing_field_is_named_with_file_and_line(tmp_path: Path) -> None:
    path = _db_with(tmp_path, {k: v for k, v in CUSTOM_APIS[1].items() if k != "example_code"})
    with pytest.raises(InputError, match=rf"^{path}:2: missing field 'example_code'"):
        read_api_db(path)


def test_gorillas_own_databases_pass_the_same_checks(gorilla_data: Path) -> None:
    source = DataSource.resolve(gorilla_data)
    assert [len(load_api_database(source, hub)) for hub in ("hf", "tf", "th")] == [936, 696, 94]


def test_the_custom_hub_needs_its_api_db(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="hub 'custom' has no API database in Gorilla's data: set api_db"):
        load_api_database(DataSource.resolve(None), "custom")
    with pytest.raises(ConfigError, match="'api_db' must be set for hub custom"):
        DataConfig(hub="custom", eval_file="e.jsonl", extra_train_files=["t.jsonl"])


def test_example_rows_without_api_data_find_their_api(tmp_path: Path) -> None:
    api_db, eval_file = write_custom_hub(tmp_path)
    examples = load_examples(eval_file, "custom", read_api_db(api_db))
    assert [e.reference_api["api_name"] for e in examples] == [
        "acme/widget-detector", "acme/ears", "acme_sdk.Forecaster", "acme_sdk.list_models"]
    stray = tmp_path / "stray.jsonl"
    stray.write_text(json.dumps({"code": "###Instruction: x\n###Output: " + custom_answer(CUSTOM_APIS[0], "c"),
                                 "api_call": "acme_sdk.teleport()"}) + "\n")
    with pytest.raises(InputError, match=rf"{stray}:1: field 'api_data' is missing and the api_call "
                                         r"'acme_sdk.teleport\(\)' is no API of the API database"):
        load_examples(stray, "custom", read_api_db(api_db))


def test_the_custom_matching_rule(tmp_path: Path) -> None:
    matcher = AstMatcher(CUSTOM_APIS, "custom")

    def matched(call: str) -> str | None:
        result = matcher.evaluate(f"<<<api_call>>>: {call}\n<<<api_provider>>>: Acme", CUSTOM_APIS[3])
        return None if result.matched_index is None else CUSTOM_APIS[result.matched_index]["api_name"]

    # Every argument must appear: positional ones as written, keyword ones by value.
    assert matched("acme_sdk.Forecaster(horizon=7, region='eu')") == "acme_sdk.Forecaster"
    assert matched("acme_sdk.Forecaster(region='eu', horizon=7)") == "acme_sdk.Forecaster"
    assert matched("acme_sdk.Forecaster(horizon=7, region='us')") is None
    assert matched("torch.hub.load('acme/zoo', 'ears')") is None  # pretrained=True left out
    # A call without arguments matches that very function, and only it.
    assert matched("acme_sdk.list_models()") == "acme_sdk.list_models"
    assert matched("acme_sdk.list_datasets()") is None


def test_the_data_stage_on_a_custom_hub(tmp_path: Path) -> None:
    api_db, eval_file = write_custom_hub(tmp_path)
    train = tmp_path / "train.jsonl"
    train.write_text(eval_file.read_text().replace("Spot every", "Count every").replace("EU", "French"))
    cfg = DataConfig(hub="custom", api_db=str(api_db), eval_file=str(eval_file), extra_train_files=[str(train)],
                     dev_fraction=0.0, retrieval="bm25", out_dir=str(tmp_path / "out"))
    assert run(cfg)["n_train"] == 4
    rows = [json.loads(line) for line in (tmp_path / "out" / "eval.jsonl").read_text().splitlines()]
    assert rows[0]["hub"] == "custom" and rows[0]["reference_api"] == CUSTOM_APIS[0]
    assert "acme/widget-detector" in rows[0]["prompt"]  # BM25 over the user's database


def test_an_eval_file_alone_needs_extra_training_files(tmp_path: Path) -> None:
    api_db, eval_file = write_custom_hub(tmp_path)
    cfg = DataConfig(hub="custom", api_db=str(api_db), eval_file=str(eval_file), out_dir=str(tmp_path / "out"))
    with pytest.raises(InputError, match="the training examples come from extra_train_files, and none is given"):
        run(cfg)
