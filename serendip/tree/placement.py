"""Place (new) items in a fitted tree: nearest centroid per level, top-down."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from serendip.data.schemas import SCHEMAS
from serendip.errors import SerendipError
from serendip.tree.cluster_tree import EMBEDDER_SUBDIR, TREE_DIR, TREE_JSON, ClusterTree
from serendip.tree.config import LEVELS
from serendip.tree.kmeans import sq_dists


def assign_items(tree: ClusterTree, item_ids, embeddings: np.ndarray) -> pa.Table:
    """item_clusters rows for (new) items: nearest centroid per level, top-down."""
    x = np.ascontiguousarray(embeddings, np.float32)
    ids = list(item_ids.to_pylist() if hasattr(item_ids, "to_pylist") else item_ids)
    if x.ndim != 2 or x.shape[0] != len(ids):
        raise SerendipError(f"{x.shape[0] if x.ndim else 0} embeddings for {len(ids)} items",
                            field="embeddings", fix="pass one embedding row per item id")
    if len(ids) and x.shape[1] != tree.dim:
        raise SerendipError(f"embedding dim {x.shape[1]} != tree dim {tree.dim}",
                            field="embeddings",
                            fix="embed new items with the same EmbeddingConfig as the tree")
    n = len(ids)
    node = np.zeros(n, np.int64)
    cols = []
    for lvl in range(LEVELS):
        level_ids = tree.ids[lvl]
        cents = tree.centroids[lvl]
        if lvl == 0:
            child_start = np.zeros(1, np.int64)
            child_count = np.array([len(level_ids)])
        else:
            parents = tree.ids[lvl - 1]
            pos = {pid: i for i, pid in enumerate(parents)}
            parent_idx = np.array([pos[c.rsplit(".", 1)[0]] for c in level_ids])
            child_start = np.searchsorted(parent_idx, np.arange(len(parents)))
            child_count = np.bincount(parent_idx, minlength=len(parents))
        new = np.zeros(n, np.int64)
        for p in np.unique(node) if n else []:
            rows = np.flatnonzero(node == p)
            s, c = int(child_start[p]), int(child_count[p])
            d = sq_dists(x[rows], cents[s:s + c])
            new[rows] = s + np.argmin(d, axis=1)
        node = new
        cols.append(np.asarray(level_ids, dtype=object)[node] if n else np.array([], object))
    return pa.table({"item_id": pa.array(ids, pa.string()),
                     **{f"c{lvl + 1}": pa.array(list(cols[lvl]), pa.string())
                        for lvl in range(LEVELS)}}, schema=SCHEMAS["item_clusters"])


def tree_path(tree_dir: str | os.PathLike) -> Path:
    """The ``cluster_tree/`` folder: ``tree_dir`` itself or the work directory holding it."""
    d = Path(tree_dir)
    if not (d / TREE_JSON).exists() and (d / TREE_DIR / TREE_JSON).exists():
        d = d / TREE_DIR
    return d


def assign_new_items(tree_dir: str | os.PathLike, items: pa.Table,
                     base_dir: str | os.PathLike | None = None, *,
                     embed: Callable[[pa.Table], np.ndarray] | None = None) -> pa.Table:
    """item_clusters rows for ``items`` (e.g. new uploads before batch scoring), one per row
    in the same order: embed them with the :class:`~serendip.embeddings.Embedder` saved beside
    the tree (the catalogue's block statistics, TF-IDF basis and behaviour map, so a new item
    is embedded exactly like the items the tree was built on; new items are cold), then place
    them with :func:`assign_items`. The one placement path: batch scoring
    (:func:`serendip.scoring.score_items`) and the scoring pipeline's ``place_new_items`` step
    call it.

    Args:
        tree_dir: the ``cluster_tree/`` folder or the work directory holding it.
        items: an items table (item_id, title, thumbnail, ...).
        base_dir: where relative media paths of ``items`` resolve (the data directory).
        embed: ``embed(items) -> (n × d)`` float embeddings in the tree's space, instead of the
            saved embedder (a test fixture's tree has none).

    Raises:
        SerendipError: no saved tree in ``tree_dir``; embeddings of another dimension.
        ConfigError: no saved embedder beside the tree (and no ``embed``).
    """
    d = tree_path(tree_dir)
    tree = ClusterTree.load(d)
    if embed is None:
        from serendip.embeddings import Embedder

        embed = functools.partial(Embedder.load(d / EMBEDDER_SUBDIR).transform, base_dir=base_dir)
    return assign_items(tree, items.column("item_id"), embed(items))


def add_new_items(tree_dir: str | os.PathLike, items: pa.Table, item_clusters: pa.Table,
                  base_dir: str | os.PathLike | None = None, *,
                  embed: Callable[[pa.Table], np.ndarray] | None = None) -> pa.Table:
    """``item_clusters`` extended with rows for the items of ``items`` it lacks, placed by
    :func:`assign_new_items` (the same arguments); returned unchanged when none is new.

    Raises:
        as :func:`assign_new_items`.
    """
    known = set(item_clusters.column("item_id").to_pylist())
    new = items.filter(pa.array([i not in known for i in items.column("item_id").to_pylist()],
                                pa.bool_()))
    if new.num_rows == 0:
        return item_clusters
    rows = assign_new_items(tree_dir, new, base_dir, embed=embed)
    return pa.concat_tables([item_clusters.cast(SCHEMAS["item_clusters"]), rows])
