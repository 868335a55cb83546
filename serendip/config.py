"""Dataclass configs, loadable from YAML and overridable from the CLI or environment.

Every stage has one config dataclass (peft's ``LoraConfig`` style): printable, saveable,
diffable. ``load_config(Cls, path, overrides)`` merges, in order, the dataclass defaults, a YAML
file and ``key=value`` overrides, and refuses unknown keys with the list of known ones.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from serendip.errors import ConfigError

T = TypeVar("T")


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "text"}


def _matches(value: Any, typ: Any) -> bool:
    """Whether ``value`` has the declared type (lenient where the type is not a plain one)."""
    if typ is type(None):
        return value is None
    if typ is bool:
        return isinstance(value, bool)
    if typ is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if typ is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if typ is str:
        return isinstance(value, str)
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arm) for arm in typing.get_args(typ))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(typ)
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return True
    if dataclasses.is_dataclass(typ):
        return isinstance(value, typ)
    return True


def _describe(typ: Any) -> str:
    if typ in _NAMES:
        return _NAMES[typ]
    origin = typing.get_origin(typ)
    if origin is tuple:
        return "a list, e.g. [a, b]"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(typ) if a is not type(None))
    return getattr(typ, "__name__", str(typ))


def _coerce(value: Any, typ: Any, name: str) -> Any:
    """``value`` converted to the field's declared type where that is lossless (YAML/KFP
    quirks), else a one-line ConfigError — a setting of the wrong type never reaches a stage
    (``steps=1.5`` used to fail deep inside training; ``lora_targets=q_proj`` became a tuple
    of letters)."""
    value = _convert(value, typ, name)
    if not _matches(value, typ):
        hint = " (quote it to keep it as text)" if typ is str else ""
        raise ConfigError(f"{value!r} is not {_describe(typ)}", field=name,
                          fix=f"give {name} as {_describe(typ)}{hint}")
    if typ is float and not isinstance(value, float):
        return float(value)
    return value


def _convert(value: Any, typ: Any, name: str) -> Any:
    origin = typing.get_origin(typ)
    if dataclasses.is_dataclass(typ) and isinstance(value, dict):
        return from_dict(typ, value)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(typ)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], name) for v in value)
        return tuple(value)
    if typ is int and isinstance(value, float) and value.is_integer():
        return int(value)  # KFP passes dict parameters through protobuf Struct: all floats
    if isinstance(value, str) and typ in (int, float, bool):
        try:
            if typ is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return value.lower() in ("true", "1", "yes")
            return typ(value)
        except ValueError:
            raise ConfigError(f"{value!r} is not a valid {typ.__name__}", field=name,
                              fix=f"give {name} as a {typ.__name__}") from None
    return value


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)} for {cls.__name__}",
                          field=sorted(unknown)[0], fix=f"use one of {sorted(known)}")
    return cls(**{k: _coerce(v, hints[k], k) for k, v in data.items()})


def to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def read_settings(path: str | Path | None, overrides: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """A YAML mapping (optional) updated with overrides — before any dataclass sees it."""
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist", field="--config",
                              fix="pass an existing YAML file")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} is not a mapping", field="--config",
                              fix="write the config as key: value pairs")
        data.update(loaded)
    data.update(overrides or {})
    return data


def load_config(cls: type[T], path: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> T:
    return from_dict(cls, read_settings(path, overrides))


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["steps=100", "lora.r=8"]`` → ``{"steps": "100", ...}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} has no '='", field="--set",
                              fix="write overrides as key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
