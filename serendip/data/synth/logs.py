"""The log simulation: sessions of (context, next item) interactions, vectorised over sessions;
the next item follows the logged policy, its satisfaction the user's interests plus noise."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from serendip.data.schemas import SCHEMAS
from serendip.data.synth.config import EPOCH_US, SynthConfig
from serendip.data.synth.taxonomy import Taxonomy
from serendip.data.synth.users import _next_leaf, _satisfaction, with_context


class _LeafSampler:
    """Sample an item of a given leaf, proportionally to impressions, vectorised."""

    def __init__(self, leaf: np.ndarray, impressions: np.ndarray, n_leaves: int):
        order = np.lexsort((np.arange(len(leaf)), leaf))
        self.items = order
        lf = leaf[order]
        w = impressions[order].astype(np.float64)
        cum = np.cumsum(w)
        start = np.searchsorted(lf, np.arange(n_leaves), side="left")
        end = np.searchsorted(lf, np.arange(n_leaves), side="right")
        base = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
        total = cum[end - 1] - base
        within = (cum - base[lf]) / total[lf]
        self.key = lf + within                   # in (leaf, leaf + 1]
        self.start, self.end = start, end

    def sample(self, leaves: np.ndarray, rng) -> np.ndarray:
        u = rng.random(len(leaves)) * (1 - 1e-12)
        pos = np.searchsorted(self.key, leaves + u, side="right")
        pos = np.clip(pos, self.start[leaves], self.end[leaves] - 1)
        return self.items[pos]


def make_interactions(tax: Taxonomy, leaf: np.ndarray, impressions: np.ndarray,
                      interests: np.ndarray, affinity: np.ndarray, cfg: SynthConfig, rng
                      ) -> pa.Table:
    total = cfg.interactions
    # Session lengths (geometric), cut so that they sum to exactly `total`.
    lengths = rng.geometric(1.0 / cfg.mean_session, size=total // 2 + 1).clip(1, 30)
    cum = np.cumsum(lengths)
    n_sessions = int(np.searchsorted(cum, total) + 1)
    lengths = lengths[:n_sessions]
    lengths[-1] -= int(cum[n_sessions - 1] - total)
    lengths = lengths[lengths > 0]
    n_sessions = len(lengths)
    # Every user gets at least one session; the rest go to random users.
    users = np.concatenate([rng.permutation(cfg.users),
                            rng.integers(0, cfg.users, size=max(0, n_sessions - cfg.users))])
    users = users[:n_sessions]
    n_int = (interests >= 0).sum(axis=1)
    pick = (rng.random(n_sessions) * n_int[users]).astype(np.int64)
    start_leaf = interests[users, pick]
    sampler = _LeafSampler(leaf, impressions, tax.n_leaves)
    current = sampler.sample(start_leaf, rng)
    t0 = EPOCH_US + rng.integers(0, cfg.days * 86400, size=n_sessions) * 10**6
    ts = t0.copy()
    cols: dict[str, list[np.ndarray]] = {"s": [], "ctx": [], "nxt": [], "sat": [], "ts": []}
    active = np.arange(n_sessions)
    for step in range(int(lengths.max())):
        active = active[lengths[active] > step]
        if len(active) == 0:
            break
        u = users[active]
        ctx = current[active]
        pick = (rng.random(len(active)) * n_int[u]).astype(np.int64)
        nl = _next_leaf(tax, leaf[ctx], interests[u, pick], cfg, rng)
        nxt = sampler.sample(nl, rng)
        clash = nxt == ctx                                      # never recommend the context
        nxt[clash] = sampler.sample(nl[clash], rng)
        ctx_interest, ctx_affinity = with_context(interests[u], affinity[u], leaf[ctx])
        sat = _satisfaction(tax, leaf[nxt], ctx_interest, ctx_affinity, cfg, rng)
        ts[active] += rng.integers(8, 90, size=len(active)) * 10**6
        cols["s"].append(active); cols["ctx"].append(ctx); cols["nxt"].append(nxt)
        cols["sat"].append(sat); cols["ts"].append(ts[active].copy())
        current[active] = nxt
    s = np.concatenate(cols["s"])
    order = np.lexsort((np.concatenate(cols["ts"]), s))
    ctx = np.concatenate(cols["ctx"])[order]
    nxt = np.concatenate(cols["nxt"])[order]
    uid = users[s[order]]
    item_ids = np.array([f"v{i:07d}" for i in range(len(leaf))], dtype=object)
    user_ids = np.array([f"u{i:06d}" for i in range(cfg.users)], dtype=object)
    return pa.table({
        "user_id": user_ids[uid],
        "context_item_id": item_ids[ctx],
        "next_item_id": item_ids[nxt],
        "satisfaction": np.round(np.concatenate(cols["sat"])[order], 4),
        "ts": pa.array(np.concatenate(cols["ts"])[order], pa.int64()).cast(
            SCHEMAS["interactions"].field("ts").type),
    })
