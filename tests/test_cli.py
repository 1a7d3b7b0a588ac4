"""`rlaif STAGE`: generated flags, help text from the config classes, errors as one line."""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from dataclasses import dataclass, field
from typing import Literal

import pytest

from rlaif_code import cli
from rlaif_code.core.config import ConfigError, describe_fields, load_config


def _config_class(stage: str) -> type:
    module_name, class_name, _ = cli.STAGES[stage]
    return getattr(importlib.import_module(module_name), class_name)


def _squeezed(text: str) -> str:
    """Text without whitespace: argparse wraps help lines (at spaces and hyphens) as it likes."""
    return "".join(text.split())


@pytest.mark.parametrize("stage", list(cli.STAGES))
def test_every_key_of_every_stage_is_documented_in_its_help(stage, capsys):
    config_cls = _config_class(stage)
    config_cls()  # defaults are valid
    undocumented = [info.name for info in describe_fields(config_cls) if not info.help.strip()]
    assert not undocumented, f"{config_cls.__name__}: fields without a help comment: {undocumented}"

    with pytest.raises(SystemExit) as exit_info:
        cli.main([stage, "--help"])
    assert exit_info.value.code == 0
    shown = _squeezed(capsys.readouterr().out)
    for info in describe_fields(config_cls):
        if stage in cli.POSITIONAL and info.name == cli.POSITIONAL[stage]:
            continue
        assert f"--{info.name}" in shown
        assert _squeezed(info.help.rstrip(".")) in shown, info.name
        if not info.required:
            assert _squeezed(f"({cli.type_label(info.type)},default:") in shown


def test_help_shows_type_default_choices_and_negations(capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    out = capsys.readouterr().out
    shown = " ".join(out.split())
    assert "--hub {hf,tf,th,custom}" in shown
    assert "--exec, --no-exec" in shown and "(bool, default: false)" in shown
    assert "--responses FILE" in shown and "(str, required)" in shown
    assert "(int, default: 2)" in shown  # exec_workers
    assert "(str | null, default: null)" in shown  # data


def test_boolean_flags_and_their_negation(tmp_path):
    cfg, _ = cli.parse_config("eval", ["--responses", "a.jsonl", "--exec"])
    assert cfg.exec is True
    cfg, _ = cli.parse_config("eval", ["--responses", "a.jsonl", "--no-exec", "--no-show_table"])
    assert cfg.exec is False and cfg.show_table is False
    assert cli.parse_config("eval", ["--responses", "a.jsonl"])[0].exec is False
    yaml_file = tmp_path / "eval.yaml"
    yaml_file.write_text("responses: a.jsonl\nexec: true\n")
    assert cli.parse_config("eval", ["--config", str(yaml_file)])[0].exec is True
    assert cli.parse_config("eval", ["--config", str(yaml_file), "--no-exec"])[0].exec is False


def test_other_values_are_read_as_yaml_scalars():
    cfg, _ = cli.parse_config("eval", ["--responses", "a.jsonl", "--metrics", "[ast, rouge]", "--exec_workers", "3",
                                       "--hub", "th", "--exec_tier", "static"])
    assert (cfg.metrics, cfg.exec_workers, cfg.hub, cfg.exec_tier) == (["ast", "rouge"], 3, "th", "static")
    cfg, _ = cli.parse_config("data", ["--max_train", "100", "--set", "max_eval=5"])
    assert (cfg.max_train, cfg.max_eval) == (100, 5)
    cfg, _ = cli.parse_config("sft", ["--lora.r", "8", "--lora.enabled", "--bf16", "off"])
    assert (cfg.lora.r, cfg.lora.enabled, cfg.bf16) == (8, True, "off")


def test_a_bad_choice_is_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", "--responses", "a.jsonl", "--hub", "xx"])
    assert exit_info.value.code == 2
    assert "argument --hub: invalid choice: 'xx' (choose from 'hf', 'tf', 'th', 'custom')" in capsys.readouterr().err


def test_a_value_given_to_a_boolean_flag_is_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", "--responses", "a.jsonl", "--exec", "yes"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: yes" in capsys.readouterr().err


def test_a_missing_required_input_is_one_clear_error(capsys):
    assert cli.main(["eval", "--exec"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: 'responses' is required (--responses FILE or in the YAML)\n"
    assert captured.out == ""


def test_an_invalid_value_is_one_error_line_naming_the_key(capsys):
    assert cli.main(["sft", "--batch_size", "0"]) == 2
    assert capsys.readouterr().err == "error: command line: 'batch_size' must be at least 1, got 0\n"
    assert cli.main(["sample", "--set", "num_samples=0"]) == 2
    assert capsys.readouterr().err == "error: command line: 'num_samples' must be at least 1, got 0\n"


# ---------------------------------------------------------------- validation in each stage config


@pytest.mark.parametrize("stage,key,value", [
    ("sft", "batch_size", 0),
    ("sft", "grad_accum", 0),
    ("sft", "warmup_ratio", 1.0),
    ("sft", "warmup_ratio", -0.1),
    ("sft", "lora.r", 0),
    ("reward", "batch_size", 0),
    ("reward", "grad_accum", 0),
    ("reward", "warmup_ratio", 1.0),
    ("reward", "heldout_fraction", 1.0),
    ("reward", "max_length", 1),
    ("sample", "num_samples", 0),
    ("sample", "batch_size", 0),
    ("sample", "max_new_tokens", 0),
    ("sample", "top_p", 0.0),
    ("judge-check", "n", 0),
    ("judge-check", "openai.concurrency", 0),
    ("feedback", "threshold", 1.5),
    ("feedback", "hf.batch_size", 0),
    ("data", "eval_fraction", 0.0),
    ("data", "max_train", 0),
    ("eval", "exec_workers", 0),
    ("report", "bootstrap", 0),
    ("exec-env", "pip_timeout", 0.0),
])
def test_post_init_checks_name_the_key(stage, key, value):
    with pytest.raises(ConfigError) as err:
        load_config(_config_class(stage), None, {key: value})
    assert str(err.value).startswith(f"command line: '{key}' must be ")
    assert str(err.value).count("command line") == 1


def test_train_and_eval_files_come_together():
    with pytest.raises(ConfigError, match=r"'eval_file' must be given together with train_file"):
        load_config(_config_class("data"), None, {"train_file": "t.json"})
    cfg = load_config(_config_class("data"), None, {"train_file": "t.json", "eval_file": "e.json"})
    assert (cfg.train_file, cfg.eval_file) == ("t.json", "e.json")


def test_the_pipeline_checks_its_sections(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("sft:\n  batch_size: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(_config_class("run"), yaml_file)
    assert str(err.value) == f"{yaml_file}: 'sft.batch_size' must be at least 1, got 0"
    # The eval section's answers file is the pipeline's to fill, not a required key of the run.
    assert load_config(_config_class("run"), None).evaluate.score.responses == ""


# ---------------------------------------------------------------- flag kinds, on a toy stage


@dataclass
class ToySection:
    depth: int = 2  # how deep


@dataclass
class ToyConfig:
    maybe: bool | None = None  # a tri-state switch
    mode: Literal["a", "b"] | None = "a"  # a choice that may be unset
    bf16: bool | Literal["auto"] = "auto"  # a choice of a word or a boolean
    ratio: float = 0.5  # 50% of it (a percent sign in help)
    tags: list[str] = field(default_factory=list)  # free-form list
    section: ToySection = field(default_factory=ToySection)  # a nested section


@pytest.fixture
def toy_stage(monkeypatch):
    module = types.ModuleType("rlaif_toy_stage")
    module.__spec__ = importlib.machinery.ModuleSpec("rlaif_toy_stage", None)
    module.ToyConfig = ToyConfig
    module.run = lambda cfg: cfg
    monkeypatch.setitem(sys.modules, "rlaif_toy_stage", module)
    monkeypatch.setitem(cli.STAGES, "toy", ("rlaif_toy_stage", "ToyConfig", "a toy stage"))
    return "toy"


def test_flag_kinds(toy_stage, capsys):
    assert cli.parse_config(toy_stage, [])[0] == ToyConfig()
    cfg, _ = cli.parse_config(toy_stage, ["--maybe", "--mode", "null", "--bf16", "false", "--tags", "[x, y]",
                                          "--section.depth", "5"])
    assert (cfg.maybe, cfg.mode, cfg.bf16, cfg.tags, cfg.section.depth) == (True, None, False, ["x", "y"], 5)
    assert cli.parse_config(toy_stage, ["--no-maybe", "--bf16", "auto"])[0].maybe is False
    assert cli.parse_config(toy_stage, ["--bf16", "true"])[0].bf16 is True
    assert cli.parse_config(toy_stage, ["--mode", "b", "--set", "mode=a"])[0].mode == "a"  # --set comes last

    with pytest.raises(SystemExit):
        cli.main([toy_stage, "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--maybe, --no-maybe a tri-state switch (bool | null, default: null)" in shown
    assert "--mode {a,b,null}" in shown and "--bf16 {true,false,auto}" in shown
    assert "50% of it" in shown
    assert "section.*: a nested section" in shown and "--section.depth INT how deep (int, default: 2)" in shown
