from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from rlaif_code.core.config import (
    ConfigError,
    check,
    check_at_least,
    config_hash,
    describe_fields,
    field_help,
    flat_fields,
    from_dict,
    load_config,
    section_help,
    to_dict,
)


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


# ---------------------------------------------------------------- help text from the source


@dataclass
class Documented:
    """A docstring is not a field's help."""

    # The comment directly above a field
    # may take several lines.
    above: int = 1
    trailing: str = "x"  # the comment at the end of its line
    # Above and trailing
    both: float = 0.5  # are joined with a space.
    # A blank line detaches a comment from the field below.

    detached: bool = False
    undocumented: int | None = None
    meta: int = field(default=3, metadata={"help": "metadata wins"})  # over a comment
    multi: list[str] = field(
        default_factory=lambda: ["a"])  # a trailing comment on the last line counts
    # `#` inside a string is not a comment:
    hashed: str = "#not-a-comment"


@dataclass
class Base:
    kept: int = 1  # the base's documentation
    replaced: int = 2  # the base's text, replaced below
    plain: int = 3


@dataclass
class Derived(Base):
    replaced: int = 20  # the subclass's text wins
    kept: int = 10
    extra: str = ""  # a field only the subclass has


@dataclass
class Outer:
    name: str = "o"  # the outer name
    lora: LoraOptions = field(default_factory=lambda: LoraOptions(r=4))  # adapters (a nested section)
    inner: Documented = field(default_factory=Documented)


def test_field_help_reads_comments_above_and_trailing():
    helps = field_help(Documented)
    assert helps["above"] == "The comment directly above a field may take several lines."
    assert helps["trailing"] == "the comment at the end of its line"
    assert helps["both"] == "Above and trailing are joined with a space."
    assert helps["detached"] == ""
    assert helps["undocumented"] == ""
    assert helps["meta"] == "metadata wins"
    assert helps["multi"] == "a trailing comment on the last line counts"
    assert helps["hashed"] == "`#` inside a string is not a comment:"
    assert set(helps) == {f for f, _, _ in flat_fields(Documented)}


def test_field_help_of_inherited_fields_prefers_the_subclass():
    helps = field_help(Derived)
    assert helps == {"kept": "the base's documentation", "replaced": "the subclass's text wins", "plain": "",
                     "extra": "a field only the subclass has"}
    helps["kept"] = "changed"  # a copy: the cache is not touched
    assert field_help(Derived)["kept"] == "the base's documentation"


def test_field_help_without_source_is_empty():
    import dataclasses as dc

    made = dc.make_dataclass("Made", [("x", int, dc.field(default=1)),
                                      ("y", int, dc.field(default=2, metadata={"help": "from metadata"}))])
    assert field_help(made) == {"x": "", "y": "from metadata"}


def test_describe_fields_flattens_sections_with_their_own_defaults_and_help():
    infos = {info.name: info for info in describe_fields(Outer)}
    assert infos["name"].help == "the outer name"
    assert (infos["lora.r"].default, infos["lora.enabled"].default) == (4, False)  # the parent's default_factory
    assert infos["inner.both"].help == "Above and trailing are joined with a space."
    assert [name for name, _, _ in flat_fields(Outer)] == list(infos)
    assert section_help(Outer) == {"lora": "adapters (a nested section)", "inner": ""}


# ---------------------------------------------------------------- checks in __post_init__, required keys


@dataclass
class Checked:
    steps: int = 10
    fraction: float = 0.5
    limit: int | None = None
    nested: LoraOptions = field(default_factory=LoraOptions)

    def __post_init__(self) -> None:
        check_at_least(self, 1, "steps", "limit")
        check(0.0 <= self.fraction < 1.0, "fraction", f"must be in [0, 1), got {self.fraction}")
        check(self.steps != 13, "steps", "must not be 13")
        if self.steps == 7:
            raise ConfigError("steps = 7 is unlucky")  # about the config as a whole


@dataclass
class CheckedOptions:
    r: int = 8

    def __post_init__(self) -> None:
        check_at_least(self, 1, "r")


@dataclass
class HoldsChecked:
    inner: CheckedOptions = field(default_factory=CheckedOptions)
    checked: Checked = field(default_factory=Checked)


@pytest.mark.parametrize("overrides,message", [
    ({"steps": 0}, "command line: 'steps' must be at least 1, got 0"),
    ({"limit": 0}, "command line: 'limit' must be at least 1, got 0"),
    ({"fraction": 1.0}, "command line: 'fraction' must be in [0, 1), got 1.0"),
    ({"steps": 13}, "command line: 'steps' must not be 13"),
    ({"steps": 7}, "command line: Checked: steps = 7 is unlucky"),
])
def test_post_init_errors_name_the_key_once_with_the_source(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(Checked, None, overrides)
    assert str(err.value) == message


def test_post_init_errors_of_a_nested_section_name_its_dotted_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  r: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(HoldsChecked, path)
    assert str(err.value) == f"{path}: 'inner.r' must be at least 1, got 0"
    assert err.value.key == "inner.r"
    with pytest.raises(ConfigError) as err:
        load_config(HoldsChecked, None, {"checked.fraction": -0.5})
    assert str(err.value) == "command line: 'checked.fraction' must be in [0, 1), got -0.5"


def test_post_init_error_raised_directly_names_the_key():
    with pytest.raises(ConfigError, match=r"^'steps' must be at least 1, got 0$"):
        Checked(steps=0)
    assert isinstance(ConfigError("x", key="k"), ValueError)


@dataclass
class NeedsInput:
    path: str = field(default="", metadata={"required": True, "metavar": "FILE"})  # the input file
    sub: Documented = field(default_factory=Documented)
    fallback: str | None = field(default=None, metadata={"required": True})


def test_required_key_left_empty_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(NeedsInput, None, {"fallback": "f"})
    assert str(err.value) == "'path' is required (--path FILE or in the YAML)"
    with pytest.raises(ConfigError, match=r"^'fallback' is required \(--fallback VALUE or in the YAML\)$"):
        load_config(NeedsInput, None, {"path": "a.jsonl"})
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("path: a.jsonl\nfallback: b\n")
    assert load_config(NeedsInput, yaml_file).path == "a.jsonl"
    assert NeedsInput().path == ""  # constructing in code is not layering: only load_config insists
    infos = {info.name: info for info in describe_fields(NeedsInput)}
    assert infos["path"].required and infos["path"].metavar == "FILE" and infos["path"].help == "the input file"


def test_yaml_off_and_on_fill_an_on_off_switch(tmp_path):
    # YAML 1.1 reads `off` as False; a Literal["auto", "on", "off"] field takes it back as "off".
    from rlaif_code.ppo.config import PPOConfig

    path = tmp_path / "ppo.yaml"
    path.write_text("bf16: off\n")
    assert load_config(PPOConfig, path).bf16 == "off"
    assert load_config(PPOConfig, None, ["bf16=on"]).bf16 == "on"


def test_a_cross_field_rule_the_command_line_satisfies_is_not_checked_on_the_file_alone(tmp_path):
    from rlaif_code.ppo.config import PPOConfig

    path = tmp_path / "ppo.yaml"
    path.write_text("batch_size: 4\nmini_batch_size: 8\n")
    assert load_config(PPOConfig, path, ["mini_batch_size=2"]).mini_batch_size == 2
    with pytest.raises(ConfigError, match="mini_batch_size"):
        load_config(PPOConfig, path)
