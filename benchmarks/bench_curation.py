"""Curation over 10M interactions (target < 30 s on 2 cores, and >= 5x faster than a plain
pandas merge + groupby version run in the same benchmark, with identical selections).

Data: 200k items in an 8/8/8/8 tree (path ids), 10M (context, next) interactions drawn so that
about half stay in the context's level-3 cluster; ``--quick``: 20k items, 1M interactions.
Timed separately: the heavy part (classify every pair, aggregate, top-k per cluster) for
ours (Arrow index join + numpy) and pandas, and our whole ``curate()`` including example building.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa


def make_data(n_items: int, n_inter: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    b = (8, 8, 8, 8)
    leaf = rng.integers(0, int(np.prod(b)), n_items)
    digits = [leaf // 512 % 8, leaf // 64 % 8, leaf // 8 % 8, leaf % 8]
    cols, path = {}, None
    for lvl in range(4):
        d = digits[lvl].astype(str)
        path = d if path is None else np.char.add(np.char.add(path, "."), d)
        cols[f"c{lvl + 1}"] = pa.array(path.tolist())
    item_ids = pa.array([f"v{i:07d}" for i in range(n_items)])
    item_clusters = pa.table({"item_id": item_ids, **cols})
    # next item: same level-3 cluster half the time (similar), else a random item
    by_l3 = np.argsort(leaf // 8, kind="stable")
    l3_sorted = (leaf // 8)[by_l3]
    ctx = rng.integers(0, n_items, n_inter)
    start = np.searchsorted(l3_sorted, leaf[ctx] // 8, side="left")
    end = np.searchsorted(l3_sorted, leaf[ctx] // 8, side="right")
    within = by_l3[start + (rng.random(n_inter) * (end - start)).astype(np.int64)]
    nxt = np.where(rng.random(n_inter) < 0.5, within, rng.integers(0, n_items, n_inter))
    sat = np.round(rng.random(n_inter), 4)
    users = pa.array([f"u{i:06d}" for i in range(100_000)])
    inter = pa.table({
        "user_id": pa.DictionaryArray.from_arrays(
            pa.array(rng.integers(0, len(users), n_inter)), users).cast(pa.string()),
        "context_item_id": pa.DictionaryArray.from_arrays(pa.array(ctx), item_ids).cast(pa.string()),
        "next_item_id": pa.DictionaryArray.from_arrays(pa.array(nxt), item_ids).cast(pa.string()),
        "satisfaction": pa.array(sat),
    })
    items = pa.table({"item_id": item_ids,
                      "title": pa.array([f"title {i}" for i in range(n_items)]),
                      "thumbnail": pa.array([f"thumbs/{i}.jpg" for i in range(n_items)]),
                      "frames": pa.array([[f"frames/{i}_{k}.jpg" for k in range(8)]
                                          for i in range(n_items)]),
                      "impressions": pa.array(np.ones(n_items, np.int64))})
    clusters = pa.table({"cluster_id": pa.array(sorted({c for lvl in range(4) for c in
                                                        cols[f"c{lvl + 1}"].to_pylist()}))})
    clusters = clusters.append_column("level", pa.array(
        [c.count(".") + 1 for c in clusters.column("cluster_id").to_pylist()], pa.int64()))
    clusters = clusters.append_column("description", pa.array(
        [f"topic {c}" for c in clusters.column("cluster_id").to_pylist()]))
    return items, inter, item_clusters, clusters


def pandas_selection(inter: pa.Table, item_clusters: pa.Table, level: int, delta: int,
                     top_k: int):
    """The plain pandas version: merges, boolean masks, groupby mean, sort, groupby head."""
    df = inter.to_pandas()
    ic = item_clusters.to_pandas()
    anc = level - delta
    c = ic[["item_id", f"c{level}", f"c{anc}"]].rename(
        columns={"item_id": "context_item_id", f"c{level}": "ctx_l", f"c{anc}": "ctx_a"})
    n = ic[["item_id", f"c{level}", f"c{anc}"]].rename(
        columns={"item_id": "next_item_id", f"c{level}": "nxt_l", f"c{anc}": "nxt_a"})
    df = df.merge(c, on="context_item_id").merge(n, on="next_item_id")
    similar = df.ctx_l == df.nxt_l
    serendip = ~similar & (df.ctx_a == df.nxt_a)
    stats = {"similar": (int(similar.sum()), float(df.satisfaction[similar].mean())),
             "serendipitous": (int(serendip.sum()), float(df.satisfaction[serendip].mean()))}
    agg = (df[serendip].groupby(["context_item_id", "nxt_l"]).satisfaction
           .agg(["mean", "size"]).reset_index())
    agg = agg.sort_values(["nxt_l", "mean", "size", "context_item_id"],
                          ascending=[True, False, False, True])
    top = agg.groupby("nxt_l").head(top_k)
    return top, stats


def run(quick: bool = False) -> dict:
    from serendip.curation import CurationConfig, curate, pair_stats, select_diversified
    from serendip.curation.pairs import _Coded

    n_items, n_inter = (20_000, 1_000_000) if quick else (200_000, 10_000_000)
    t0 = time.perf_counter()
    items, inter, ic, clusters = make_data(n_items, n_inter)
    gen_s = time.perf_counter() - t0
    cfg = CurationConfig(level=3, delta=1, top_k=10)

    def ours():
        coded = _Coded(inter, ic, drop_unknown=False)
        return pair_stats(coded, cfg.level, cfg.delta), select_diversified(coded, cfg)

    def best_of(fn, repeats):
        """Best wall time of ``repeats`` runs (the machine is shared: take the least noisy)."""
        times, out = [], None
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    repeats = 2
    ours_s, (stats, sel) = best_of(ours, repeats)
    pandas_s, (top, pstats) = best_of(
        lambda: pandas_selection(inter, ic, cfg.level, cfg.delta, cfg.top_k), repeats)

    same = (sorted(zip(sel.column("context_item_id").to_pylist(),
                       sel.column("target_cluster_id").to_pylist()))
            == sorted(zip(top.context_item_id, top.nxt_l)))
    same_stats = (pstats["serendipitous"][0] == stats["serendipitous"]["pairs"]
                  and pstats["similar"][0] == stats["similar"]["pairs"])

    full_s, res = best_of(lambda: curate(items, inter, clusters, ic, cfg), repeats)
    return {
        "interactions": n_inter, "items": n_items, "level": cfg.level, "delta": cfg.delta,
        "timing": f"best of {repeats} runs each",
        "data_gen_s": round(gen_s, 2),
        "ours_heavy_part_s": round(ours_s, 2),
        "pandas_heavy_part_s": round(pandas_s, 2),
        "speedup_vs_pandas": round(pandas_s / ours_s, 2),
        "curate_total_s": round(full_s, 2),
        "selected_pairs": sel.num_rows, "examples": res.examples.num_rows,
        "same_selection_as_pandas": bool(same), "same_pair_counts_as_pandas": bool(same_stats),
        "target": {"curate_total_s": 30, "speedup_vs_pandas": 5},
        "meets_target": bool(full_s < 30 and pandas_s / ours_s >= 5 and same),
    }
