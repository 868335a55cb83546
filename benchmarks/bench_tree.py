"""``build_cluster_tree`` for 1M items × 64-dim embeddings, 8/8/8/8 (target < 2 min on 2 cores;
sibling traffic max/min ≤ 1.2), and one flat faiss k-means with the same leaf count (4096) in the
same run for the time ratio.

Data: a hierarchical Gaussian mixture (4 096 latent leaves, 64 dims) with heavy-tailed
(log-normal, σ=1.5) impressions and titles made of per-level topic words plus filler, so the
description step does real work. ``--quick``: 100k items, 8/8/4/4.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa


def make_data(n: int, branching: tuple[int, ...], dim: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = [np.zeros((1, dim), np.float32)]
    scales = (1.0, 0.5, 0.25, 0.12)
    for b, s in zip(branching, scales):
        parent = np.repeat(centres[-1], b, axis=0)
        centres.append((parent + rng.normal(0, s, parent.shape)).astype(np.float32))
    leaves = len(centres[-1])
    leaf = rng.integers(0, leaves, n)
    x = centres[-1][leaf] + rng.normal(0, 0.06, (n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    impressions = np.ceil(rng.lognormal(5.0, 1.5, n)).astype(np.int64)
    # titles: each level's topic word with probability 0.5, then filler
    div = np.cumprod((1,) + tuple(reversed(branching[1:])))[::-1]
    words = []
    for lvl in range(4):
        node = leaf // div[lvl]
        # letters only: a word with digits is never a description term
        w = np.char.add(f"topic{'abcd'[lvl]}x",
                        np.char.translate(node.astype(str), str.maketrans("0123456789",
                                                                          "abcdefghij")))
        words.append(np.where(rng.random(n) < 0.5, w, ""))
    filler = np.array(["amazing", "watch", "best", "video", "new", "today"])[rng.integers(0, 6, n)]
    titles = words[0]
    for w in words[1:] + [filler]:
        titles = np.char.add(np.char.add(titles, " "), w)
    items = pa.table({"item_id": pa.array([f"i{i:07d}" for i in range(n)]),
                      "title": pa.array(titles.tolist()),
                      "impressions": pa.array(impressions)})
    return items, x, impressions


def run(quick: bool = False) -> dict:
    import faiss

    from serendip.tree import ClusterConfig, build_cluster_tree

    n, branching = (100_000, (8, 8, 4, 4)) if quick else (1_000_000, (8, 8, 8, 8))
    t0 = time.perf_counter()
    items, x, _ = make_data(n, branching)
    gen_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    tree = build_cluster_tree(items, x, ClusterConfig(branching=branching, seed=0))
    tree_s = time.perf_counter() - t0
    timing = dict(tree.stats.get("timing", {}))

    leaves = int(np.prod(branching))
    t0 = time.perf_counter()
    km = faiss.Kmeans(x.shape[1], leaves, niter=20, seed=1, max_points_per_centroid=256,
                      verbose=False)
    km.train(x)
    km.index.search(x, 1)       # assign every item, as the tree does
    flat_s = time.perf_counter() - t0

    levels = {k: v for k, v in tree.stats.items() if k.startswith("level")}
    worst = max(v["balanceable_max_min_traffic_worst"] for v in levels.values())
    return {
        "items": n, "dim": int(x.shape[1]), "branching": list(branching), "leaves": leaves,
        "data_gen_s": round(gen_s, 2),
        "tree_s": round(tree_s, 2), "tree_timing_s": timing,
        "flat_kmeans_same_leaves_s": round(flat_s, 2),
        "tree_over_flat_time_ratio": round(tree_s / flat_s, 3),
        "balance": levels,
        "worst_sibling_traffic_ratio": worst,
        "target": {"tree_s": 120, "sibling_max_min_traffic": 1.2},
        "meets_target": bool(tree_s < 120 and worst <= 1.2 + 1e-9),
        "faiss_threads": faiss.omp_get_max_threads(),
    }
