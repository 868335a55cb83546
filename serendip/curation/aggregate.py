"""Diversified selection (paper §2, §4.1): satisfaction aggregated per (context item, next-item
cluster), the ``top_k`` context items kept per cluster, and the deterministic held-out split by
context item."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serendip.curation.config import CurationConfig
from serendip.curation.pairs import _Coded

SELECTED_SCHEMA = pa.schema([
    ("context_item_id", pa.string()),
    ("target_cluster_id", pa.string()),
    ("satisfaction", pa.float64()),
    ("n_interactions", pa.int64()),
    ("split", pa.string()),
])



def select_diversified(coded: _Coded, cfg: CurationConfig) -> pa.Table:
    """Top-k context items per next-item cluster by mean satisfaction (ties: more pairs, then
    context item id), over the serendipitous pairs — vectorised (sort-based group-by)."""
    _, serendip = coded.classify(cfg.level, cfg.delta)
    code, names = coded.level(cfg.level)
    ctx = coded.ctx[serendip]
    target = code[coded.nxt[serendip]]
    n_clusters = max(len(names), 1)
    key = ctx * n_clusters + target
    uniq, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    mean = np.bincount(inv, weights=coded.sat[serendip], minlength=len(uniq)) / np.maximum(counts, 1)
    g_ctx, g_target = uniq // n_clusters, uniq % n_clusters
    keep = counts >= cfg.min_interactions
    g_ctx, g_target, mean, counts = g_ctx[keep], g_target[keep], mean[keep], counts[keep]
    ids = coded.item_clusters.column("item_id")
    id_rank = np.empty(len(ids), np.int64)
    id_rank[pc.sort_indices(ids).to_numpy()] = np.arange(len(ids))
    order = np.lexsort((id_rank[g_ctx], -counts, -mean, g_target))
    g_target_sorted = g_target[order]
    first = np.searchsorted(g_target_sorted, g_target_sorted, side="left")
    order = order[np.arange(len(order)) - first < cfg.top_k]
    # report clusters in id order
    name_rank = np.empty(len(names), np.int64)
    name_rank[pc.sort_indices(names).to_numpy()] = np.arange(len(names))
    order = order[np.argsort(name_rank[g_target[order]], kind="stable")]
    return pa.table({
        "context_item_id": ids.take(pa.array(g_ctx[order])),
        "target_cluster_id": names.take(pa.array(g_target[order])),
        "satisfaction": pa.array(mean[order], pa.float64()),
        "n_interactions": pa.array(counts[order], pa.int64()),
    })


def split_by_context(context_ids: list[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Deterministic train/test split by context item (hash of seed and id)."""
    uniq = sorted(set(context_ids))
    if not uniq:
        return {}
    u = np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{c}".encode(), digest_size=8)
                                 .digest(), "big") / 2**64 for c in uniq])
    test = u < test_fraction
    if test_fraction > 0 and len(uniq) >= 2:
        if not test.any():
            test[int(np.argmin(u))] = True
        if test.all():
            test[int(np.argmax(u))] = False
    return {c: ("test" if t else "train") for c, t in zip(uniq, test)}


def split_logged_transitions(interactions: pa.Table, test_fraction: float, seed: int
                             ) -> tuple[pa.Table, pa.Table, set[str]]:
    """(training transitions, held-out transitions, held-out context ids): every logged
    context item split by :func:`split_by_context` (so a context's split never depends on
    which others were curated); ``test_fraction`` 0 holds nothing out."""
    ctx = pc.unique(interactions.column("context_item_id")).to_pylist()
    held = {c for c, s in split_by_context(ctx, test_fraction, seed).items() if s == "test"}
    mask = pc.is_in(interactions.column("context_item_id"),
                    value_set=pa.array(sorted(held), pa.string()))
    return interactions.filter(pc.invert(mask)), interactions.filter(mask), held
