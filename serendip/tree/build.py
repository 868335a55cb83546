"""Fit the 4-level tree top-down: every node split by balanced k-means
(:func:`serendip.tree.kmeans.split_node`), then descriptions and balance statistics."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from serendip.data.schemas import SCHEMAS
from serendip.descriptions import describe_clusters, grounding_report
from serendip.errors import ConfigError
from serendip.tree.balance import balance_stats
from serendip.tree.cluster_tree import ClusterTree
from serendip.tree.config import LEVELS, ClusterConfig
from serendip.tree.kmeans import split_node

MAX_AUTO_BRANCHING = 8      # the paper's widest level (8/8/8/8 = 4,096 leaves)


def auto_branching(n_items: int, leaf_items: int = 25, min_leaf_items: int = 1
                   ) -> tuple[int, ...]:
    """Branching that follows the catalogue size: about ``n_items / leaf_items`` leaves
    (at least 2^4 = 16, at most 8^4 = 4,096), spread over the 4 levels as evenly as possible,
    broadest first (non-increasing), never more leaves than ``n_items / min_leaf_items``.

    Examples: 600 items → 3/2/2/2; 1,682 → 4/4/2/2; 6,000 → 4/4/4/4; 100,000 → 8/8/8/8.

    Raises:
        ConfigError: fewer than 16 × ``min_leaf_items`` items (no 4-level tree fits).
    """
    cap = n_items // max(1, min_leaf_items)
    if cap < 2 ** LEVELS:
        raise ConfigError(f"{n_items} items are too few for a {LEVELS}-level tree "
                          f"(at least {2 ** LEVELS * max(1, min_leaf_items)})", field="branching",
                          fix="add items or lower min_leaf_items")
    target = min(max(n_items / max(1, leaf_items), 2.0 ** LEVELS),
                 float(MAX_AUTO_BRANCHING ** LEVELS), float(cap))
    best, best_key = None, None
    rng = range(2, MAX_AUTO_BRANCHING + 1)
    for b in ((a, b, c, d) for a in rng for b in rng for c in rng for d in rng
              if a >= b >= c >= d):
        leaves = math.prod(b)
        if leaves > cap:
            continue
        off = abs(math.log(leaves / target))     # within ~20% counts as on target; then
        key = (round(off / 0.2), max(b) - min(b), off)   # the most even split wins
        if best_key is None or key < best_key:
            best, best_key = b, key
    return best



def build_cluster_tree(items: pa.Table, embeddings: np.ndarray,
                       cfg: ClusterConfig | None = None, labels: pa.Table | None = None, *,
                       threads: int = 1) -> ClusterTree:
    """Fit the 4-level tree on ``items`` (item_id, title, impressions; optional ``labels``,
    list<string> or string, e.g. genres, which may also name clusters; or pass ``labels`` as
    an (item_id, labels) table, see :func:`serendip.data.labels.read_item_labels`) and their embeddings
    (n × d). ``cfg.branching="auto"`` is resolved from the catalogue size
    (:func:`auto_branching`); the tree's config holds the branching used and
    ``stats["branching"]`` says how it was chosen. ``threads``: faiss OpenMP threads while
    building (a run-time flag, not a setting; nodes are small, so more threads mostly spin on a
    shared machine).

    The tree-structured interest clusters of paper §2 (LLM-based hierarchical
    recommendation): the MLLM answers with a cluster's description at level l.

    Raises:
        ConfigError: bad settings, embeddings not one row per item, too few items.
    """
    import dataclasses

    import faiss

    cfg = dataclasses.replace(cfg) if cfg is not None else ClusterConfig()
    cfg.check()
    n = items.num_rows
    if embeddings.shape[0] != n:
        raise ConfigError(f"{embeddings.shape[0]} embeddings for {n} items", field="embeddings",
                          fix="compute one embedding per item row (same order)")
    if cfg.branching == "auto":
        cfg.branching = auto_branching(n, cfg.auto_leaf_items, cfg.min_leaf_items)
        chosen = {"mode": "auto", "branching": list(cfg.branching),
                  "why": f"{n} items / ~{cfg.auto_leaf_items} per leaf → "
                         f"{math.prod(cfg.branching)} leaves (auto_branching)"}
    else:
        cfg.branching = tuple(int(b) for b in cfg.branching)
        chosen = {"mode": "given", "branching": list(cfg.branching)}
    leaves = math.prod(cfg.branching)
    if n < leaves * cfg.min_leaf_items:
        raise ConfigError(f"{n} items are too few for branching "
                          f"{'/'.join(map(str, cfg.branching))} ({leaves} leaves)",
                          field="branching",
                          fix=f"use a smaller --branching (product <= {n // cfg.min_leaf_items})"
                              " or more items")
    previous_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, threads))
    try:
        tree = _build(items, embeddings, cfg, _item_labels(items, labels))
        tree.stats["branching"] = chosen
        return tree
    finally:
        faiss.omp_set_num_threads(previous_threads)


def _item_labels(items: pa.Table, labels: pa.Table | None) -> list | None:
    """Per item row, its labels (a list, a string or None), from ``labels`` (item_id,
    labels) or else the items' own ``labels`` column; None when there are none."""
    if labels is not None:
        by_id = dict(zip(labels.column("item_id").to_pylist(),
                         labels.column("labels").to_pylist()))
        return [by_id.get(i) for i in items.column("item_id").to_pylist()]
    if "labels" in items.column_names:
        return items.column("labels").to_pylist()
    return None


def _build(items: pa.Table, embeddings: np.ndarray, cfg: ClusterConfig,
           item_labels: list | None = None) -> ClusterTree:
    import time

    from tqdm import tqdm

    n = items.num_rows
    t_start = time.perf_counter()
    x = np.ascontiguousarray(embeddings, np.float32)
    impressions = np.asarray(items.column("impressions").to_numpy(zero_copy_only=False),
                             np.float64)
    weight = np.power(np.maximum(impressions, 0.0), cfg.traffic_power)
    if weight.sum() <= 0:
        weight = np.ones(n)
    node_of = np.zeros(n, np.int64)          # index of the item's node at the current level
    ids: list[list[str]] = []
    cents: list[np.ndarray] = []
    nodes = np.zeros((n, LEVELS), np.int64)     # per item: node index within each level
    parent_ids = [""]
    rng = np.random.default_rng(cfg.seed)
    for lvl in range(LEVELS):
        k = cfg.branching[lvl]
        min_count = math.prod(cfg.branching[lvl + 1:]) * cfg.min_leaf_items
        level_ids: list[str] = []
        level_cents: list[np.ndarray] = []
        new_node = np.zeros(n, np.int64)
        order = np.argsort(node_of, kind="stable")
        bounds = np.searchsorted(node_of[order], np.arange(len(parent_ids) + 1))
        seeds = rng.integers(0, 2**31 - 1, size=len(parent_ids))
        for p, pid in enumerate(tqdm(parent_ids, desc=f"level {lvl + 1}", mininterval=5,
                                     disable=len(parent_ids) < 64 or n < 100_000)):
            members = order[bounds[p]:bounds[p + 1]]
            labels, c = split_node(x[members], weight[members], k, min_count, cfg, int(seeds[p]))
            base = len(level_ids)
            for j in range(k):
                level_ids.append(f"{pid}.{j}" if pid else str(j))
            level_cents.append(c)
            new_node[members] = base + labels
        ids.append(level_ids)
        cents.append(np.concatenate(level_cents).astype(np.float32))
        nodes[:, lvl] = new_node
        node_of = new_node
        parent_ids = level_ids
    item_ids = items.column("item_id")
    ic = pa.table({"item_id": item_ids,
                   **{f"c{lvl + 1}": pa.array(ids[lvl], pa.string()).take(pa.array(nodes[:, lvl]))
                      for lvl in range(LEVELS)}}, schema=SCHEMAS["item_clusters"])
    sizes, traffic = _sizes_and_traffic(nodes, ids, impressions)
    t_split = time.perf_counter()
    titles = items.column("title").to_pylist()
    descriptions = describe_clusters(titles, nodes, ids, cfg, labels=item_labels)
    t_desc = time.perf_counter()
    tree = ClusterTree(config=cfg, ids=ids, centroids=cents, descriptions=descriptions,
                       sizes=sizes, traffic=traffic, item_clusters=ic)
    tree.stats = balance_stats(nodes, impressions, cfg.branching, cfg.balance_tol, ids,
                               cfg.traffic_power)
    tree.stats["descriptions"] = grounding_report(descriptions, titles, nodes, ids, item_labels,
                                                  cfg.description_min_share)
    tree.stats["timing"] = {"split_s": round(t_split - t_start, 2),
                            "describe_s": round(t_desc - t_split, 2),
                            "total_s": round(time.perf_counter() - t_start, 2)}
    return tree


def _sizes_and_traffic(nodes: np.ndarray, ids: list[list[str]], impressions: np.ndarray
                       ) -> tuple[dict[str, int], dict[str, int]]:
    sizes: dict[str, int] = {}
    traffic: dict[str, int] = {}
    for lvl in range(LEVELS):
        cnt = np.bincount(nodes[:, lvl], minlength=len(ids[lvl]))
        tr = np.bincount(nodes[:, lvl], weights=impressions, minlength=len(ids[lvl]))
        for cid, c, t in zip(ids[lvl], cnt, tr):
            sizes[cid] = int(c)
            traffic[cid] = int(round(t))
    return sizes, traffic
