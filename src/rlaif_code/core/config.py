"""Typed stage configs: defaults, then YAML, then CLI flags.

Every stage has a dataclass config. `load_config` layers the three sources and
refuses anything it cannot place: an unknown key or a value of the wrong type is
a `ConfigError` naming the key and where it came from, never silently dropped.

A config documents itself: each field's help text (`field_help`, shown by
`rlaif STAGE --help`) is the comment directly above it and/or the comment at the
end of its line, or `field(metadata={"help": ...})`. Checks on values (ranges,
counts) live in the config's `__post_init__` and raise `ConfigError(..., key=...)`;
`from_dict` adds where the value came from. A field marked
`field(default="", metadata={"required": True})` must be set by the YAML or a flag.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import json
import re
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from rlaif_code.core.fields import holds_default

T = TypeVar("T")
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the key and its source.

    A config's `__post_init__` raises it with `key=` and a message about that key's value
    (`ConfigError("must be at least 1, got 0", key="batch_size")`); `from_dict` turns it into
    one message that says where the value came from and the key's dotted path.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        self.detail = message
        self.located = False  # True once the message names its source
        super().__init__(f"'{key}' {message}" if key else message)


def check(ok: bool, key: str, message: str) -> None:
    """For a config's `__post_init__`: a `ConfigError` about `key` unless `ok`."""
    if not ok:
        raise ConfigError(message, key=key)


def check_at_least(cfg: Any, minimum: int | float, *keys: str) -> None:
    """For a config's `__post_init__`: each of `keys` is at least `minimum` (None: unset, allowed)."""
    for key in keys:
        value = getattr(cfg, key)
        check(value is None or value >= minimum, key, f"must be at least {minimum}, got {value!r}")


def check_fraction(cfg: Any, *keys: str, include_one: bool = False) -> None:
    """For a config's `__post_init__`: each of `keys` is in [0, 1) (or [0, 1] with `include_one`)."""
    for key in keys:
        value = getattr(cfg, key)
        ok = value is None or (0.0 <= value <= 1.0 if include_one else 0.0 <= value < 1.0)
        check(ok, key, f"must be in [0, 1{']' if include_one else ')'}, got {value!r}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check `value` against annotation `tp`, converting only where lossless (int -> float)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, source)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{source}: '{key}' = {value!r} is not a {_type_name(tp)}")
    if origin is Literal:
        # YAML 1.1 reads on/off as booleans: a switch spelled "on"/"off" takes them back.
        if isinstance(value, bool) and {"on", "off"} <= set(get_args(tp)):
            value = "on" if value else "off"
        if value not in get_args(tp):
            choices = ", ".join(repr(c) for c in get_args(tp))
            raise ConfigError(f"{source}: '{key}' = {value!r} is not one of {choices}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' = {value!r} is not a list")
        (item_tp, *_rest) = get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' = {value!r} is not a mapping")
        key_tp, val_tp = get_args(tp) or (Any, Any)
        return {k: _coerce(v, val_tp, f"{key}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping of {tp.__name__} fields")
        return from_dict(tp, value, source=source, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: '{key}' = {value!r} is not a bool (true/false)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: '{key}' = {value!r} is not an int")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # PyYAML (YAML 1.1) reads `1e-5` as a string; accept exponent notation for floats.
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)
        raise ConfigError(f"{source}: '{key}' = {value!r} is not a float")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{source}: '{key}' = {value!r} is not a string")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{source}: '{key}' = {value!r} is not a path")
    raise ConfigError(f"{source}: '{key}' has an unsupported type {_type_name(tp)}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config", prefix: str = "") -> T:
    """Build `cls` from a mapping; unknown keys and wrong types raise `ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' for {cls.__name__} "
            f"(known: {', '.join(sorted(names))})"
        )
    kwargs = {name: _coerce(value, hints[name], prefix + name, source) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:  # from __post_init__: about one key (or the whole config)
        if err.located:
            raise
        where = f"'{prefix}{err.key}' {err.detail}" if err.key else f"{cls.__name__}: {err.detail}"
        located = ConfigError(f"{source}: {where}")
        located.key, located.located = (prefix + err.key if err.key else None), True
        raise located from err
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {cls.__name__}: {err}") from err


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready mapping of a config (paths as strings), the form stored in artifacts."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)
                    if not (f.metadata.get("omit_default") and holds_default(value, f))}
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return convert(cfg)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """`key.sub=value` with the value read as YAML (so 3 is an int, true a bool, [a, b] a list)."""
    if "=" not in text:
        raise ConfigError(f"command line: override '{text}' must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _nest(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cursor = out
    parts = key.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return out


def load_config(
    cls: type[T],
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    *,
    section: str | None = None,
) -> T:
    """Defaults, then the YAML file (optionally one `section` of it), then overrides.

    Overrides come from the command line, so they carry their own source name in errors.
    """
    base = to_dict(cls())
    if yaml_path is not None:
        data = read_yaml(yaml_path)
        if section is not None:
            data = data.get(section, {}) or {}
        base = _merge(base, data)
        # Check the file alone first, so its errors name the file; a cross-field check that the
        # command line may still satisfy (batch_size: 4 with --mini_batch_size 2) waits for it.
        try:
            from_dict(cls, base, source=str(yaml_path))
        except ConfigError:
            if not overrides:
                raise
    if overrides:
        items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
        for key, value in items:
            base = _merge(base, _nest(key, value))
        cfg = from_dict(cls, base, source="command line" if not yaml_path else f"{yaml_path} + command line")
    else:
        cfg = from_dict(cls, base, source=str(yaml_path) if yaml_path else "defaults")
    check_required(cfg)
    return cfg


def check_required(cfg: Any) -> None:
    """A top-level field marked `metadata={"required": True}` that is still empty ("" or None)
    after layering is an error telling how to set it (nested sections are filled by their owner)."""
    for f in dataclasses.fields(cfg):
        if f.metadata.get("required") and getattr(cfg, f.name) in ("", None):
            metavar = f.metadata.get("metavar", "VALUE")
            raise ConfigError(f"is required (--{f.name} {metavar} or in the YAML)", key=f.name)


def config_hash(cfg: Any) -> str:
    """A stable short hash of a config, used to tell whether an artifact is stale."""
    import hashlib

    blob = json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One leaf field of a config, as `rlaif STAGE --help` shows it."""

    name: str  # dotted path: lora.r
    type: Any  # the annotation
    default: Any  # the value in a default-constructed config (nested sections' own defaults included)
    help: str  # documentation: metadata["help"] or the field's comments; "" when it has none
    required: bool = False  # a top-level field that must be set (metadata={"required": True})
    metavar: str | None = None  # metadata["metavar"], e.g. FILE


def describe_fields(cls: type, prefix: str = "", instance: Any = None) -> list[FieldInfo]:
    """Every leaf field of `cls` (nested dataclasses flattened to dotted names), documented."""
    out: list[FieldInfo] = []
    hints = _hints(cls)
    helps = field_help(cls)
    instance = cls() if instance is None else instance
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        default = getattr(instance, f.name)
        if dataclasses.is_dataclass(tp):
            out.extend(describe_fields(tp, prefix + f.name + ".", default if isinstance(default, tp) else None))
        else:
            out.append(FieldInfo(prefix + f.name, tp, default, helps.get(f.name, ""),
                                 required=bool(f.metadata.get("required")) and not prefix,
                                 metavar=f.metadata.get("metavar")))
    return out


def section_help(cls: type, prefix: str = "") -> dict[str, str]:
    """{dotted name: documentation} of every nested dataclass field (a section such as `lora`)."""
    out: dict[str, str] = {}
    hints = _hints(cls)
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out[prefix + f.name] = helps.get(f.name, "")
            out.update(section_help(hints[f.name], prefix + f.name + "."))
    return out


def flat_fields(cls: type, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted name, type, default) for every leaf field: `describe_fields` without the help text."""
    return [(info.name, info.type, info.default) for info in describe_fields(cls, prefix)]


def field_help(cls: type) -> dict[str, str]:
    """Each field's documentation ("" when it has none), by field name.

    `field(metadata={"help": ...})` comes first, else the field's comments: the `#` lines
    directly above it, then the comment at the end of its line, joined with a space.
    Inherited fields keep their base class's text unless the subclass documents them anew.
    """
    return dict(_field_help(cls))


@functools.lru_cache(maxsize=None)
def _field_help(cls: type) -> dict[str, str]:
    texts: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        own = klass.__dict__.get("__annotations__", {})
        comments = _class_comments(klass)
        for name in own:
            f = klass.__dict__.get("__dataclass_fields__", {}).get(name)
            text = (f.metadata.get("help") if f is not None else None) or comments.get(name)
            if text:
                texts[name] = " ".join(str(text).split())
    return {f.name: texts.get(f.name, "") for f in dataclasses.fields(cls)}


@functools.lru_cache(maxsize=None)
def _class_comments(cls: type) -> dict[str, str]:
    """{field name: its comments} read from the source of `cls`'s own body ({} without source)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(source)
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, TypeError, SyntaxError, tokenize.TokenError):
        return {}
    lines = source.splitlines()
    whole_line: dict[int, str] = {}  # line number -> text of a comment that is the whole line
    trailing: dict[int, str] = {}  # line number -> text of a comment after code
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            text = tok.string.lstrip("#").strip()
            (trailing if lines[row - 1][:col].strip() else whole_line)[row] = text
    classdef = next((node for node in tree.body if isinstance(node, ast.ClassDef)), None)
    if classdef is None:
        return {}
    out = {}
    for node in classdef.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above = []
        row = node.lineno - 1
        while row in whole_line:
            above.append(whole_line[row])
            row -= 1
        end = node.end_lineno or node.lineno
        after = [trailing[r] for r in (node.lineno, end) if r in trailing]
        text = " ".join(t for t in [*reversed(above), *dict.fromkeys(after)] if t)
        if text:
            out[node.target.id] = text
    return out
