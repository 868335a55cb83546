"""Generating the platform in memory (:func:`synthesize`) and writing it to a directory
(:func:`write_synth`: items, interactions, ``truth/`` tables and ``truth.json``)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from serendip.data.io import atomic_write_bytes, atomic_write_parquet, write_table
from serendip.data.synth.catalogue import make_items
from serendip.data.synth.config import SynthConfig
from serendip.data.synth.logs import make_interactions
from serendip.data.synth.taxonomy import build_taxonomy
from serendip.data.synth.truth import recall_ceiling, truth_tables
from serendip.data.synth.users import make_users


def synthesize(cfg: SynthConfig) -> dict[str, pa.Table]:
    """Generate items, interactions and ground truth (in memory)."""
    cfg.check()
    rng = np.random.default_rng(cfg.seed)
    tax = build_taxonomy(cfg, rng)
    items, leaf = make_items(tax, cfg, rng)
    interests, affinity = make_users(tax, cfg, rng)
    inter = make_interactions(tax, leaf, items.column("impressions").to_numpy(),
                              interests, affinity, cfg, rng)
    out = {"items": items, "interactions": inter}
    out.update({f"truth/{k}": v for k, v in truth_tables(tax, leaf, interests, affinity, cfg).items()})
    out["_taxonomy"] = tax  # type: ignore[assignment]
    out["_leaf"] = leaf     # type: ignore[assignment]
    return out


def write_synth(cfg: SynthConfig, out_dir: str | Path, with_ceiling: bool = True) -> dict:
    """Generate the platform and write it under ``out_dir``; returns a summary."""
    out = Path(out_dir)
    data = synthesize(cfg)
    tax, leaf = data.pop("_taxonomy"), data.pop("_leaf")
    write_table(out, "items", data["items"])
    write_table(out, "interactions", data["interactions"], refs={"items": data["items"]})
    for name, table in data.items():
        if name.startswith("truth/"):
            atomic_write_parquet(table, out / f"{name}.parquet")
    summary = {"items": data["items"].num_rows, "interactions": data["interactions"].num_rows,
               "users": cfg.users, "leaves": tax.n_leaves, "branching": list(tax.branching)}
    if with_ceiling:
        summary.update(recall_ceiling(tax, leaf, data["interactions"]))
    meta = {"config": asdict(cfg), "summary": summary}
    atomic_write_bytes(out / "truth" / "truth.json", json.dumps(meta, indent=2).encode())
    return summary
