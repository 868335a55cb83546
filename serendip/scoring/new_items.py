"""Place items missing from item_clusters in the saved tree before scoring."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from serendip.data.media import media_root
from serendip.data.schemas import SCHEMAS


def assign_new_items(workdir: str | os.PathLike, items: pa.Table, item_clusters: pa.Table,
                     embed: Callable[[pa.Table], np.ndarray] | None = None,
                     reference: int = 256, seed: int = 0) -> pa.Table:
    """item_clusters extended with rows for items that have none, placed in the saved tree.

    ``embed(items) -> embeddings`` defaults to the cluster stage's embeddings (its
    EmbeddingConfig is read from the tree). Embedding scales each feature block over the batch
    it sees, so the new items are embedded together with a fixed sample of ``reference``
    already-clustered items — close to the catalogue's scaling without re-embedding it all
    (on the synthetic platform the placements match a full re-embedding).
    """
    known = set(item_clusters.column("item_id").to_pylist())
    ids = items.column("item_id").to_pylist()
    new_pos = [p for p, i in enumerate(ids) if i not in known]
    if not new_pos:
        return item_clusters
    from serendip.tree import ClusterTree, assign_items

    wd = Path(workdir)
    tree = ClusterTree.load(wd / "cluster_tree")
    if embed is None:
        from serendip.config import from_dict
        from serendip.embeddings import EmbeddingConfig, item_embeddings

        # the cluster stage records the EmbeddingConfig it used in the tree's stats
        ecfg = from_dict(EmbeddingConfig, tree.stats.get("embedding", {}).get("config", {}))

        def embed(t: pa.Table) -> np.ndarray:
            return item_embeddings(t, ecfg, base_dir=media_root(wd))

    old_pos = np.asarray([p for p, i in enumerate(ids) if i in known], np.int64)
    rng = np.random.default_rng(seed)
    ref = np.sort(rng.choice(old_pos, min(reference, len(old_pos)), replace=False))
    emb = embed(items.take(np.concatenate([np.asarray(new_pos, np.int64), ref])))
    rows = assign_items(tree, [ids[p] for p in new_pos], emb[:len(new_pos)])
    return pa.concat_tables([item_clusters.cast(SCHEMAS["item_clusters"]), rows])
