"""One served work directory per test session, shared by the serving test modules (building it
costs ~20 s: synthetic platform, tiny VLM, retriever, scoring, Feast)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

_CACHE: dict[str, Path] = {}


def served_workdir(tmp_path_factory, feast: bool = True) -> Path:
    key = f"feast={feast}"
    if key not in _CACHE:
        from serendip.serving_fixture import FixtureConfig, build_serving_workdir

        wd = build_serving_workdir(tmp_path_factory.mktemp("served"),
                                   FixtureConfig(items=400, users=150, interactions=5000))
        if feast:             # the embedded sqlite store, whatever the calling test set
            import os

            from serendip.platform import features

            saved = os.environ.pop(features.ONLINE_ENV, None)
            try:
                features.sync(wd)
            finally:
                if saved is not None:
                    os.environ[features.ONLINE_ENV] = saved
        _CACHE[key] = wd
    return _CACHE[key]


def cluster_members(wd: Path) -> dict[str, set[str]]:
    """cluster id (any level) → its items, from item_clusters."""
    t = pq.read_table(wd / "item_clusters.parquet").to_pylist()
    out: dict[str, set[str]] = {}
    for r in t:
        for lvl in ("c1", "c2", "c3", "c4"):
            out.setdefault(r[lvl], set()).add(r["item_id"])
    return out


def scored_items(wd: Path) -> list[str]:
    return pq.read_table(wd / "item_serendipity.parquet").column("item_id").to_pylist()


def unscored_items(wd: Path) -> list[str]:
    scored = set(scored_items(wd))
    items = pq.read_table(wd / "items.parquet").column("item_id").to_pylist()
    return [i for i in items if i not in scored]
