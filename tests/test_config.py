from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from rlaif_code.config import ConfigError, config_hash, from_dict, load_config, to_dict


@dataclass
class LoraOptions:
    enabled: bool = False
    r: int = 8


@dataclass
class ToyConfig:
    name: str = "x"
    lr: float = 1e-4
    steps: int = 10
    mode: Literal["a", "b"] = "a"
    limit: int | None = None
    tags: list[str] = field(default_factory=list)
    lora: LoraOptions = field(default_factory=LoraOptions)


def test_defaults_then_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\nlr: 0.5\nlora:\n  r: 4\n")
    cfg = load_config(ToyConfig, path, {"steps": 30, "lora.enabled": True})
    assert (cfg.steps, cfg.lr, cfg.lora.r, cfg.lora.enabled, cfg.name) == (30, 0.5, 4, True, "x")


def test_cli_style_overrides_are_read_as_yaml_scalars():
    cfg = load_config(ToyConfig, None, ["steps=7", "limit=null", "tags=[a, b]", "mode=b"])
    assert (cfg.steps, cfg.limit, cfg.tags, cfg.mode) == (7, None, ["a", "b"], "b")


def test_unknown_key_in_yaml_names_key_and_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stepz: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*unknown key 'stepz'"):
        load_config(ToyConfig, path)


def test_unknown_nested_key_is_named_with_its_path():
    with pytest.raises(ConfigError, match=r"unknown key 'lora\.rank'"):
        load_config(ToyConfig, None, {"lora.rank": 3})


@pytest.mark.parametrize("key,value", [("steps", "ten"), ("steps", 1.5), ("lr", True), ("mode", "c"),
                                       ("tags", "a"), ("lora", 3)])
def test_wrong_types_are_errors_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config(ToyConfig, None, {key: value})


def test_int_is_accepted_where_float_expected_and_round_trips():
    cfg = from_dict(ToyConfig, {"lr": 1})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert from_dict(ToyConfig, to_dict(cfg)) == cfg
    assert config_hash(cfg) == config_hash(from_dict(ToyConfig, to_dict(cfg)))
    assert config_hash(cfg) != config_hash(from_dict(ToyConfig, {"lr": 2}))


def test_yaml_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(ToyConfig, path)


def test_missing_yaml_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(ToyConfig, tmp_path / "nope.yaml")


def test_exponent_notation_is_a_float_even_where_yaml_reads_a_string(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-5\n")
    assert load_config(ToyConfig, path).lr == 1e-5
    assert load_config(ToyConfig, None, ["lr=3e-4"]).lr == 3e-4
    with pytest.raises(ConfigError, match="lr"):
        load_config(ToyConfig, None, ["lr=fast"])
