"""Typed stage configs: defaults, then YAML, then CLI flags.

Every stage has a dataclass config. `load_config` layers the three sources and
refuses anything it cannot place: an unknown key or a value of the wrong type is
a `ConfigError` naming the key and where it came from, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the key and its source."""


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
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {cls.__name__}: {err}") from err


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready mapping of a config (paths as strings), the form stored in artifacts."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
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
        # Validate the file's keys against the schema before merging, so the error names the file.
        from_dict(cls, _merge(base, data), source=str(yaml_path))
        base = _merge(base, data)
    if overrides:
        items = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides)
        for key, value in items:
            base = _merge(base, _nest(key, value))
        return from_dict(cls, base, source="command line" if not yaml_path else f"{yaml_path} + command line")
    return from_dict(cls, base, source=str(yaml_path) if yaml_path else "defaults")


def config_hash(cfg: Any) -> str:
    """A stable short hash of a config, used to tell whether an artifact is stale."""
    import hashlib

    blob = json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def flat_fields(cls: type, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted name, type, default) for every leaf field; drives the generated CLI flags."""
    out = []
    hints = _hints(cls)
    instance = cls()
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        default = getattr(instance, field.name)
        if dataclasses.is_dataclass(tp):
            out.extend(flat_fields(tp, prefix + field.name + "."))
        else:
            out.append((prefix + field.name, tp, default))
    return out
