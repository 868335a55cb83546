"""``curation.json``: the one manifest a curation run writes (:func:`write_curation`) and every
later stage reads (:func:`read_curation`), so one work directory never means two δs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from serendip.curation.config import CurationConfig, CurationResult
from serendip.errors import ConfigError
from serendip.prompts import PromptConfig, prompt_manifest

CURATION_FILE = "curation.json"
_MANIFEST_KEYS = ("level", "delta", "top_k")      # top level, and again inside ``config``


@dataclass(frozen=True)
class CurationManifest:
    """What a curation run records in ``curation.json``: the settings it ran with (l, δ, top-k,
    the held-out split's fraction and seed, and the prompt the examples were actually built
    with), its statistics and the level-``l`` candidates (paper §2, §4.1).

    The one reader (:func:`read_curation`) and writer (:func:`write_curation`) of the file: every
    later stage (fine-tuning, evaluation, scoring, serving, the demo) takes l, δ, the split and
    the prompt from here, so one work directory never means two δs.

    Raises:
        ConfigError: ``config`` has no prompt (the manifest records the prompt actually used).
    """

    config: CurationConfig
    stats: dict = field(default_factory=dict)
    candidate_cluster_ids: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()         # descriptions of the level-l clusters

    def __post_init__(self) -> None:
        if self.config.prompt is None:
            raise ConfigError("a curation manifest without the prompt the examples were built "
                              "with", field="prompt", fix="pass CurationConfig(prompt=...)")
        self.config.check()

    @classmethod
    def from_result(cls, result: CurationResult, cfg: CurationConfig) -> CurationManifest:
        """The manifest of a :func:`curate` run: ``cfg`` with the prompt actually used (it may
        have adapted to the media, :func:`choose_prompt`)."""
        return cls(replace(cfg, prompt=result.prompt or cfg.prompt),
                   result.stats, tuple(result.candidate_cluster_ids), tuple(result.candidates))

    @property
    def level(self) -> int:
        """l: the tree level at which context and next item differ; 1..4."""
        return self.config.level

    @property
    def delta(self) -> int:
        """δ: context and next item share the cluster at level l - δ; 1..level."""
        return self.config.delta

    @property
    def top_k(self) -> int:
        return self.config.top_k

    @property
    def test_fraction(self) -> float:
        """Held-out share of context items, in [0, 1) (the split of the examples)."""
        return self.config.test_fraction

    @property
    def seed(self) -> int:
        """Seed of the held-out split."""
        return self.config.seed

    @property
    def prompt(self) -> PromptConfig:
        """The prompt the examples were built with (the manifest that travels to the model)."""
        return self.config.prompt

    def to_json(self) -> dict:
        """The ``curation.json`` document: level, δ, top-k, the ``prompt`` manifest
        (:func:`serendip.prompts.prompt_manifest`), the full config, the statistics and the
        candidates."""
        from serendip.config import to_dict

        return {"level": self.level, "delta": self.delta, "top_k": self.top_k,
                "prompt": prompt_manifest(self.prompt), "config": to_dict(self.config),
                "stats": self.stats, "candidate_cluster_ids": list(self.candidate_cluster_ids),
                "candidates": list(self.candidates)}


def write_curation(directory: str | os.PathLike, manifest: CurationManifest) -> Path:
    """Write ``manifest`` to ``<directory>/curation.json`` (atomically); returns the path."""
    import json

    from serendip.data.io import atomic_write_bytes

    path = Path(directory) / CURATION_FILE
    atomic_write_bytes(path, json.dumps(manifest.to_json(), indent=2).encode())
    return path


def read_curation(directory: str | os.PathLike, *, missing_ok: bool = False
                  ) -> CurationManifest | None:
    """The :class:`CurationManifest` of ``<directory>/curation.json``, exactly as curation wrote
    it: every setting is read from the file (never a default), through the one config loader
    (:func:`serendip.config.load_config`), so it is range-checked as on the command line.

    Args:
        directory: the work directory (or the KFP examples artifact) holding curation.json.
        missing_ok: return None when there is no curation.json (a caller that deliberately
            works on a bare cluster tree then applies its own explicit fallback); a file that
            is there is always read strictly.

    Raises:
        SerendipError: no curation.json (and not ``missing_ok``): run ``serendip curate``.
        ConfigError: the file is not a JSON object, lacks ``prompt``, ``level``, ``delta``,
            ``top_k`` or ``config``, has a value of the wrong type or out of range, or its
            top-level and ``config`` values disagree (the field is named; fix: re-curate).
    """
    import json

    from serendip.config import load_config
    from serendip.errors import SerendipError
    from serendip.prompts import read_prompt_manifest

    path = Path(directory) / CURATION_FILE
    fix = f"re-run `serendip curate --data {directory}`"
    if not path.is_file():
        if missing_ok:
            return None
        raise SerendipError(f"{path} is missing", field=CURATION_FILE,
                            fix=f"run `serendip curate --data {directory}` first")
    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} is not a JSON object", field=CURATION_FILE, fix=fix)
    prompt = read_prompt_manifest(doc, str(path), fix)
    for key in _MANIFEST_KEYS:
        if key not in doc:
            raise ConfigError(f"{path} has no {key}", field=key, fix=fix)
    conf = doc.get("config")
    if not isinstance(conf, dict):
        raise ConfigError(f"{path} has no config object", field="config", fix=fix)
    for key in _MANIFEST_KEYS:
        if key in conf and conf[key] != doc[key]:
            raise ConfigError(f"{path}: {key}={doc[key]!r} but config.{key}={conf[key]!r}",
                              field=key, fix=fix)
    for key in ("test_fraction", "seed"):       # the held-out split: never a default
        if key not in conf:
            raise ConfigError(f"{path} has no config.{key}", field=f"config.{key}", fix=fix)
    settings = {**conf, **{k: doc[k] for k in _MANIFEST_KEYS}}
    settings.pop("prompt", None)
    try:
        cfg = load_config(CurationConfig, settings=settings)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e.message}", field=e.field, fix=fix) from None
    stats = doc.get("stats", {})
    ids, cands = doc.get("candidate_cluster_ids", []), doc.get("candidates", [])
    if not isinstance(stats, dict) or not isinstance(ids, list) or not isinstance(cands, list):
        raise ConfigError(f"{path}: stats must be an object, candidate_cluster_ids and "
                          "candidates lists", field=CURATION_FILE, fix=fix)
    return CurationManifest(replace(cfg, prompt=prompt), stats, tuple(ids), tuple(cands))
