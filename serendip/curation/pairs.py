"""Serendipitous pairs (paper §2): a logged (context v, next n) pair is *similar* when v and n
share their level-``l`` cluster, *serendipitous* when they differ at level ``l`` but share the
level ``l - δ`` cluster. Item ids are resolved to row indices once (Arrow's hash join); every
cluster comparison after that is an integer gather."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serendip.curation.config import CurationConfig
from serendip.errors import SchemaError


class _Coded:
    """Interactions resolved against item_clusters once: item row indices (a hash join done
    by Arrow), then every cluster comparison is an integer gather — no string joins."""

    def __init__(self, interactions: pa.Table, item_clusters: pa.Table, drop_unknown: bool):
        ids = item_clusters.column("item_id")
        ctx = pc.index_in(interactions.column("context_item_id"), value_set=ids)
        nxt = pc.index_in(interactions.column("next_item_id"), value_set=ids)
        ctx_np = ctx.fill_null(-1).to_numpy().astype(np.int64, copy=False)
        nxt_np = nxt.fill_null(-1).to_numpy().astype(np.int64, copy=False)
        sat = interactions.column("satisfaction").to_numpy().astype(np.float64, copy=False)
        known = (ctx_np >= 0) & (nxt_np >= 0)
        self.n_missing = int(len(known) - known.sum())
        if self.n_missing and not drop_unknown:
            first = int(np.argmin(known))
            col = "context_item_id" if ctx_np[first] < 0 else "next_item_id"
            ex = interactions.column(col)[first].as_py()
            raise SchemaError("interactions", "context_item_id/next_item_id",
                              f"{self.n_missing} interaction(s) reference items without clusters "
                              f"(e.g. {ex!r})",
                              "cluster the same items (or assign new items to the tree), or set "
                              "drop_unknown_items=true")
        if self.n_missing:
            self.rows = np.flatnonzero(known)
            ctx_np, nxt_np, sat = ctx_np[known], nxt_np[known], sat[known]
        else:
            self.rows = np.arange(len(known))
        self.ctx, self.nxt, self.sat = ctx_np, nxt_np, sat
        self.item_clusters = item_clusters
        self._levels: dict[int, tuple[np.ndarray, pa.Array]] = {}
        self._masks: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def level(self, lvl: int) -> tuple[np.ndarray, pa.Array]:
        """(cluster code per item row, cluster names) at level ``lvl``."""
        if lvl not in self._levels:
            enc = pc.dictionary_encode(self.item_clusters.column(f"c{lvl}")).combine_chunks()
            self._levels[lvl] = (enc.indices.to_numpy(zero_copy_only=False).astype(np.int64),
                                 enc.dictionary)
        return self._levels[lvl]

    def classify(self, level: int, delta: int) -> tuple[np.ndarray, np.ndarray]:
        """Boolean masks (similar, serendipitous) over the known interactions."""
        if (level, delta) not in self._masks:
            self._masks[(level, delta)] = self._classify(level, delta)
        return self._masks[(level, delta)]

    def _classify(self, level: int, delta: int) -> tuple[np.ndarray, np.ndarray]:
        code, _ = self.level(level)
        cl, nl = code[self.ctx], code[self.nxt]
        similar = cl == nl
        serendip = ~similar
        if level - delta >= 1:
            anc, _ = self.level(level - delta)
            serendip &= anc[self.ctx] == anc[self.nxt]
        return similar, serendip


def serendipitous_pairs(interactions: pa.Table, item_clusters: pa.Table, level: int = 3,
                        delta: int = 1, drop_unknown_items: bool = False) -> pa.Table:
    """The logged (context, next) pairs that are serendipitous at (``level``, ``delta``), with
    both items' level-``level`` cluster ids (context_cluster_id, next_cluster_id): different
    clusters at level l, the same cluster at level l - δ (paper §2).

    Raises:
        ConfigError: ``level`` not in 1..4 or ``delta`` not in 1..level.
        SchemaError: interactions naming items that are not in ``item_clusters`` (unless
            ``drop_unknown_items``).
    """
    CurationConfig(level=level, delta=delta).check()
    coded = _Coded(interactions, item_clusters, drop_unknown_items)
    _, serendip = coded.classify(level, delta)
    code, names = coded.level(level)
    rows = coded.rows[serendip]
    out = interactions.select(["user_id", "context_item_id", "next_item_id", "satisfaction"]
                              ).take(pa.array(rows))
    return (out.append_column("context_cluster_id", names.take(pa.array(code[coded.ctx[serendip]])))
               .append_column("next_cluster_id", names.take(pa.array(code[coded.nxt[serendip]]))))


def pair_stats(coded: _Coded, level: int, delta: int) -> dict:
    """Counts and mean satisfaction of similar, serendipitous and other pairs."""
    similar, serendip = coded.classify(level, delta)
    out = {}
    for kind, mask in (("similar", similar), ("serendipitous", serendip),
                       ("other", ~similar & ~serendip)):
        n = int(mask.sum())
        out[kind] = {"pairs": n,
                     "mean_satisfaction": round(float(coded.sat[mask].mean()), 4) if n else None}
    return out


def premise_grid(coded: _Coded, levels: int = 4) -> list[dict]:
    """The paper's motivating check (serendipitous next items satisfy more than similar ones)
    at every (level, delta) the tree allows, so the chosen pair can be seen in context: the
    premise is a property of the platform and of the tree, and may hold at some depths only."""
    rows = []
    for level in range(2, levels + 1):
        for delta in range(1, level):
            k = pair_stats(coded, level, delta)
            a, b = k["serendipitous"]["mean_satisfaction"], k["similar"]["mean_satisfaction"]
            rows.append({"level": level, "delta": delta,
                         "serendipitous_pairs": k["serendipitous"]["pairs"],
                         "similar_pairs": k["similar"]["pairs"],
                         "serendipitous_minus_similar": (None if a is None or b is None
                                                         else round(a - b, 4))})
    return rows

