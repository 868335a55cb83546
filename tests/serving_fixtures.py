"""Serving test fixtures, one copy for every serving test module (a pytest plugin listed in
``conftest.pytest_plugins``): one served work directory per session (building it costs ~20 s:
synthetic platform, tiny VLM, retriever, scoring, Feast on its embedded sqlite store) and the
handlers loaded from it; plus small readers of that work directory."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="session")
def served_wd(tmp_path_factory) -> Path:
    """A served work directory (:func:`serendip.testing.serving.build_serving_workdir`) with
    Feast synced into the embedded sqlite store, whatever the calling test set."""
    import os

    from serendip.platform import features
    from serendip.testing.serving import FixtureConfig, build_serving_workdir

    wd = build_serving_workdir(tmp_path_factory.mktemp("served"),
                               FixtureConfig(items=400, users=150, interactions=5000))
    saved = os.environ.pop(features.ONLINE_ENV, None)
    try:
        features.sync(wd)
    finally:
        if saved is not None:
            os.environ[features.ONLINE_ENV] = saved
    return wd


@pytest.fixture(scope="session")
def mllm_handler(served_wd):
    """The ``mllm`` handler on the served work directory's latest model."""
    from serendip.serving.handlers import MllmHandler
    from serendip.serving.repository import latest_mllm_dir

    return MllmHandler.load(latest_mllm_dir(served_wd))


@pytest.fixture(scope="session")
def retriever_handler(served_wd):
    """The ``retriever`` handler on the served work directory's retriever."""
    from serendip.serving.handlers import RetrieverHandler

    return RetrieverHandler.load(served_wd / "retriever")


def cluster_members(wd: Path) -> dict[str, set[str]]:
    """cluster id (any level) → its items, from item_clusters."""
    t = pq.read_table(wd / "item_clusters.parquet").to_pylist()
    out: dict[str, set[str]] = {}
    for r in t:
        for lvl in ("c1", "c2", "c3", "c4"):
            out.setdefault(r[lvl], set()).add(r["item_id"])
    return out


def scored_items(wd: Path) -> list[str]:
    """Items of ``item_serendipity`` (feature-store hits)."""
    return pq.read_table(wd / "item_serendipity.parquet").column("item_id").to_pylist()


def unscored_items(wd: Path) -> list[str]:
    """Catalogue items not scored yet (the MLLM fallback's population)."""
    scored = set(scored_items(wd))
    items = pq.read_table(wd / "items.parquet").column("item_id").to_pylist()
    return [i for i in items if i not in scored]
