"""One loader for every config dataclass (issue 13 step 2; RecBole's single ``Config`` idea).

Every stage has one config dataclass in peft's ``LoraConfig`` style: each field carries its
help text (``field(default=..., metadata={"help": ...})``, with unit and range) and the class
validates itself on construction (``__post_init__`` → ``check()``), so ``FinetuneConfig(lr=-1)``
raises :class:`~serendip.errors.ConfigError` wherever it is built.

:func:`load_config` is the only place settings become a config. It merges, in order,

1. the dataclass defaults,
2. a YAML file (``--config``),
3. a mapping (``settings``: a KFP component's ``settings`` dict, a CLI flag, Python callers),
4. ``KEY=VALUE`` strings (``--set``; the value is read as YAML),

where keys may be dotted (``prompt.strategy``, ``tiny.text_hidden``) or nested mappings, and
resolves them into the nested dataclasses. Values are coerced from the field's declared type
where that is lossless (``"1e-3"`` → float for a float field, ``3.0`` → 3 for an int field:
KFP passes every number as a float); anything else is refused in one line naming the field,
the expected type and the value. An unknown key is refused naming it and the closest known
ones. ``serendip config --list [SECTION]`` and ``docs/settings.md`` list every setting
(:func:`settings_rows`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import math
import numbers
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from serendip.errors import ConfigError

T = TypeVar("T")

#: Section name (``serendip config --list SECTION``) → ``module:Class`` of its config. Nested
#: configs (``prompt``, ``tiny``, ``embedding``, ...) are listed inside their parent with
#: dotted names; they are sections of their own too.
SECTIONS: dict[str, str] = {
    "synth": "serendip.data.synth.config:SynthConfig",
    "import": "serendip.data.recbole:RecBoleImportConfig",
    "cluster": "serendip.tree.config:ClusterConfig",
    "embedding": "serendip.embeddings:EmbeddingConfig",
    "curate": "serendip.curation.config:CurationConfig",
    "prompt": "serendip.prompts:PromptConfig",
    "finetune": "serendip.mllm.config:FinetuneConfig",
    "tiny": "serendip.mllm.tiny:TinyVLMConfig",
    "base": "serendip.mllm.base:BaseConfig",
    "ablation": "serendip.mllm.ablation:AblationConfig",
    "train-retriever": "serendip.retriever.train:RetrieverConfig",
    "score": "serendip.scoring.config:ScoringConfig",
    "replay": "serendip.evaluation.replay:ReplayConfig",
    "online-sim": "serendip.evaluation.online_sim:OnlineSimConfig",
    "blend": "serendip.blend:BlendConfig",
    "serve": "serendip.platform.serving.server:ServeConfig",
    "serving-fixture": "serendip.testing.serving:FixtureConfig",
    "scoring-fixture": "serendip.testing.scoring:ScoringFixtureConfig",
}


def section_class(name: str) -> type:
    """The config class of section ``name`` (imported on demand).

    Raises:
        ConfigError: an unknown section (the message lists the close ones)."""
    if name not in SECTIONS:
        raise ConfigError(f"unknown config section {name!r}", field="SECTION",
                          fix=_did_you_mean(name, SECTIONS))
    module, cls = SECTIONS[name].split(":")
    return getattr(importlib.import_module(module), cls)


# ------------------------------------------------------------------ the loader
def load_config(cls: type[T], path: str | Path | None = None, sets: list[str] | None = None,
                *, settings: dict[str, Any] | None = None) -> T:
    """``cls`` built from defaults < YAML ``path`` < ``settings`` < ``sets`` (module docstring).

    Args:
        cls: a config dataclass (nested dataclass fields are filled from sub-mappings).
        path: a YAML file holding a mapping, or None.
        sets: ``KEY=VALUE`` strings (``--set``), dotted keys for nested fields.
        settings: a mapping with plain, dotted or nested keys, or None.

    Raises:
        ConfigError: the file is missing or not a mapping, a ``--set`` lacks ``=``, an
            unknown key, a value of the wrong type, or a value the class's checks refuse;
            the field is named with its dotted path.
    """
    data: dict[str, Any] = {}
    if path:
        _merge(data, _nest(read_yaml(path), "--config"))
    if settings:
        _merge(data, _nest(settings, ""))
    if sets:
        _merge(data, _nest(parse_sets(sets), "--set"))
    return _build(cls, data, "")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file (empty file: ``{}``).

    Raises:
        ConfigError: the file does not exist, is not YAML, or holds no mapping."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist", field="--config",
                          fix="pass an existing YAML file")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"config file {p} is not valid YAML{where}", field="--config",
                          fix="write the config as key: value pairs") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {p} is not a mapping", field="--config",
                          fix="write the config as key: value pairs")
    return loaded


def parse_sets(pairs: list[str] | None) -> dict[str, Any]:
    """``["steps=100", "prompt.strategy=text"]`` → ``{"steps": 100, "prompt.strategy": "text"}``
    (each value read as YAML: ``[a, b]`` is a list, ``null`` is None, ``'123'`` is text).

    Raises:
        ConfigError: a pair without ``=`` or with an empty key, or a value that is not YAML."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"override {pair!r} has no '='", field="--set",
                              fix="write overrides as key=value")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"value {value!r} of {key.strip()} is not valid YAML",
                              field=key.strip(), fix="quote it, e.g. key='a: b'") from None
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain JSON types (tuples → lists, paths → text): for logs and metadata;
    :func:`load_config` (``settings=``) turns it back into the config."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _nest(mapping: dict[str, Any], source: str) -> dict[str, Any]:
    """Dotted keys → nested mappings (``{"a.b": 1}`` → ``{"a": {"b": 1}}``), recursively."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"setting name {key!r} is not a dotted name", field=source or str(key),
                              fix="write keys like steps or prompt.strategy")
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        if isinstance(value, dict):
            value = _nest(value, source)
            if isinstance(node.get(parts[-1]), dict):
                _merge(node[parts[-1]], value)
                continue
        node[parts[-1]] = value
    return out


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _did_you_mean(key: str, known, prefix: str = "") -> str:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    if close:
        return (f"did you mean {' or '.join(prefix + c for c in close)}? "
                "`serendip config --list` shows every setting")
    return f"use one of {', '.join(prefix + k for k in sorted(known))}"


def _build(cls: type[T], data: dict[str, Any], prefix: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            raise ConfigError(f"unknown setting for {cls.__name__}", field=prefix + key,
                              fix=_did_you_mean(key, fields, prefix))
    kwargs = {k: _coerce(v, hints[k], prefix + k, fields[k]) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if prefix and e.field and not e.field.startswith(prefix):
            raise ConfigError(e.message, field=prefix + e.field, fix=e.fix) from None
        raise
    except TypeError as e:      # a required field without a value
        if "required" not in str(e):
            raise
        missing = [n for n, f in fields.items() if n not in kwargs
                   and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        raise ConfigError(f"no value for a required setting of {cls.__name__}",
                          field=prefix + (missing[0] if missing else ""),
                          fix=f"give {', '.join(prefix + m for m in missing)}") from None


# ------------------------------------------------------------------ types
_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "text",
          Path: "a path"}


def _dataclass_arm(typ: Any) -> type | None:
    """The dataclass in ``X`` or ``X | None``, else None."""
    if dataclasses.is_dataclass(typ):
        return typ
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(typ) if a is not type(None)]
        if len(arms) == 1 and dataclasses.is_dataclass(arms[0]):
            return arms[0]
    return None


def describe(typ: Any) -> str:
    """A type in words (``int`` → "an integer", ``tuple[str, ...]`` → "a list of text")."""
    if typ in _NAMES:
        return _NAMES[typ]
    if typ is type(None):
        return "null"
    origin = typing.get_origin(typ)
    if origin is tuple:
        args = typing.get_args(typ)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}, e.g. [a, b]"
        return f"a list of {len(args)} {_plural(args[0]) if args else 'values'}"
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(typ)
        text = " or ".join(describe(a) for a in arms if a is not type(None))
        return text + (" or null" if type(None) in arms else "")
    if dataclasses.is_dataclass(typ):
        return f"a mapping of {typ.__name__} settings"
    return getattr(typ, "__name__", str(typ))


def type_name(typ: Any) -> str:
    """A short type name for listings: ``int``, ``float | None``, ``tuple[str, ...]``."""
    if isinstance(typ, type) and typing.get_origin(typ) is None:
        return typ.__name__ if typ is not type(None) else "None"
    text = re.sub(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Za-z_])", "", str(typ))   # module paths
    return text.replace("NoneType", "None")


def _plural(typ: Any) -> str:
    return {int: "integers", float: "numbers", str: "texts", bool: "booleans"}.get(
        typ, getattr(typ, "__name__", "values"))


def _matches(value: Any, typ: Any) -> bool:
    """Whether ``value`` has the declared type (lenient where the type is not a plain one)."""
    if typ is Any:
        return True
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
    if typ is Path:
        return isinstance(value, Path)
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arm) for arm in typing.get_args(typ))
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        args = typing.get_args(typ)
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args))
    if dataclasses.is_dataclass(typ):
        return isinstance(value, typ)
    return True


def _coerce(value: Any, typ: Any, name: str, fld: dataclasses.Field | None = None) -> Any:
    """``value`` converted to the field's declared type where that is lossless (YAML/KFP
    quirks), else a one-line ConfigError — a setting of the wrong type never reaches a stage
    (``steps=1.5`` used to fail deep inside training; ``lora_targets=q_proj`` became a tuple
    of letters)."""
    klass = _dataclass_arm(typ)
    if klass is not None and isinstance(value, dict):
        base = getattr(fld, "default_factory", dataclasses.MISSING) if fld else dataclasses.MISSING
        if base is not dataclasses.MISSING:     # the parent's own default for the nested config
            value = {**to_dict_shallow(base()), **value}
        return _build(klass, value, name + ".")
    value = _convert(value, typ, name)
    if not _matches(value, typ):
        hint = " (quote it to keep it as text)" if typ is str and value is not None else ""
        raise ConfigError(f"{value!r} is not {describe(typ)}", field=name,
                          fix=f"give {name} as {describe(typ)}{hint}")
    if typ is float and not isinstance(value, float):
        return float(value)
    return value


def to_dict_shallow(cfg: Any) -> dict[str, Any]:
    """A dataclass's init fields as a mapping, values as they are (nested configs stay objects)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.init}


def _convert(value: Any, typ: Any, name: str) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(typ):        # the first arm the value converts into
            try:
                got = _convert(value, arm, name)
            except ConfigError:
                continue
            if _matches(got, arm):
                return got
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(typ)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
        if len(args) == len(value):
            return tuple(_convert(v, a, f"{name}[{i}]") for i, (v, a) in
                         enumerate(zip(value, args)))
        return tuple(value)
    if typ is Path and isinstance(value, str):
        return Path(value)
    if typ is int and isinstance(value, float) and value.is_integer():
        return int(value)  # KFP passes dict parameters through protobuf Struct: all floats
    if isinstance(value, str) and typ in (int, float, bool):
        text = value.strip().lower()
        try:
            if typ is bool:
                if text not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                return text in ("true", "1", "yes")
            if typ is int:
                return int(text)
            number = float(text)         # YAML 1.1 reads 1e-3 as text
            if not math.isfinite(number):
                raise ValueError
            return number
        except ValueError:
            raise ConfigError(f"{value!r} is not {describe(typ)}", field=name,
                              fix=f"give {name} as {describe(typ)}") from None
    return value


# ------------------------------------------------------------------ listing (help, docs)
def settings_rows(cls: type, prefix: str = "") -> list[dict[str, str]]:
    """One row per setting of ``cls`` (nested configs flattened with dotted names): name,
    type, default and help, in declaration order — what ``serendip config --list`` prints
    and ``docs/settings.md`` tabulates."""
    hints = typing.get_type_hints(cls)
    rows: list[dict[str, str]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        typ = hints[f.name]
        klass = _dataclass_arm(typ)
        default = _default(f)
        if klass is not None and default is not None and dataclasses.is_dataclass(default):
            rows += settings_rows(type(default), prefix + f.name + ".")
            continue
        rows.append({"name": prefix + f.name, "type": type_name(typ),
                     "default": _show(default), "help": f.metadata.get("help", "")})
        if klass is not None:            # Optional nested config, None by default
            rows += settings_rows(klass, prefix + f.name + ".")
    return rows


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _show(value: Any) -> str:
    if value is dataclasses.MISSING:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def format_settings(section: str, cls: type) -> str:
    """A plain-text listing of one section (``serendip config --list SECTION``)."""
    rows = settings_rows(cls)
    width = max((len(r["name"]) for r in rows), default=0)
    lines = [f"[{section}] {cls.__module__}.{cls.__qualname__}"]
    for r in rows:
        lines.append(f"  {r['name']:<{width}}  {r['type']} = {r['default']}")
        lines.append(f"  {'':<{width}}    {r['help']}")
    return "\n".join(lines)


def settings_markdown() -> str:
    """``docs/settings.md``: every section's settings as a table (generated; see
    tests/test_config.py)."""
    out = ["# Settings", "",
           "Every setting of every stage, with its type, default and help (unit, range).",
           "Generated from the config dataclasses' field metadata by "
           "`.venv/bin/python tests/test_config.py`; a test fails when this file is stale.",
           "", "Give settings as a YAML file (`--config FILE`) and/or `--set KEY=VALUE` "
           "(dotted keys for nested configs, e.g. `--set prompt.strategy=text`); "
           "`serendip config --list [SECTION]` prints the same listing.", ""]
    for section in SECTIONS:
        cls = section_class(section)
        out += [f"## {section}", "", f"`{cls.__module__}.{cls.__qualname__}`", "",
                "| setting | type | default | help |", "|---|---|---|---|"]
        for r in settings_rows(cls):
            cells = [f"`{r['name']}`", f"`{r['type']}`", f"`{r['default']}`", r["help"]]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out)
