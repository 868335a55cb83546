"""Dataclass configs, loadable from YAML and overridable from the CLI or environment.

Every stage has one config dataclass (peft's ``LoraConfig`` style): printable, saveable,
diffable. ``load_config(Cls, path, overrides)`` merges, in order, the dataclass defaults, a YAML
file and ``key=value`` overrides, and refuses unknown keys with the list of known ones.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from serendip.errors import ConfigError

T = TypeVar("T")


def _coerce(value: Any, typ: Any, name: str) -> Any:
    origin = typing.get_origin(typ)
    if dataclasses.is_dataclass(typ) and isinstance(value, dict):
        return from_dict(typ, value)
    if origin is tuple and isinstance(value, (list, tuple)):
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
