"""The synthetic short-video platform: the embedded default data set with a known ground truth.

Ground truth real logs never give (README 'The synthetic platform'):

* a latent 4-level topic taxonomy with readable names; items are spread over leaves so that
  every topic carries about the same traffic (the tree is meant to be recoverable);
* titles carry the topic only partly (facet words appear with some probability, among filler
  and the occasional misleading word), media carry it fully (see :mod:`serendip.data.media`);
* each leaf has a *bridge*: a sibling level-3 topic under the same level-2 ancestor whose
  items its viewers enjoy; the bridge's texture is drawn as a motif in the leaf's media;
* users have 1–3 interest leaves and, per interest, a hidden affinity for its bridge;
* sessions follow a production-like policy that mostly stays on topic and only sometimes jumps
  to a sibling topic, so bridges are rare in the logs; satisfaction follows the user's interests
  plus noise: familiar < bridge-with-affinity, so serendipitous pairs beat similar ones.

Everything is vectorised over sessions; the same seed gives byte-identical tables.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from serendip.data import media
from serendip.data.io import atomic_write_bytes, atomic_write_parquet, write_table
from serendip.data.schemas import SCHEMAS
from serendip.data.taxonomy_names import FILLER, L1, L2, L3, L4
from serendip.errors import ConfigError

EPOCH_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


@dataclass
class SatisfactionModel:
    """Mean satisfaction of a next item by its relation to the user's interests."""

    familiar: float = field(default=0.45, metadata={
        "help": "mean satisfaction of an item in the same leaf as an interest (relevant but "
                "stale); in [0, 1]"})
    bridge_affinity: float = field(default=0.90, metadata={
        "help": "... of the interest's bridge topic when the user has the hidden affinity; "
                "in [0, 1]"})
    sibling_leaf: float = field(default=0.40, metadata={
        "help": "... of an item in the same level-3 topic as an interest; in [0, 1]"})
    same_l2: float = field(default=0.30, metadata={
        "help": "... of an item in the same level-2 topic, not a liked bridge; in [0, 1]"})
    same_l1: float = field(default=0.22, metadata={
        "help": "... of an item in the same level-1 topic; in [0, 1]"})
    unrelated: float = field(default=0.12, metadata={
        "help": "... of an unrelated item; in [0, 1]"})
    noise: float = field(default=0.15, metadata={
        "help": "standard deviation of the Gaussian noise added (result clipped into [0, 1]); "
                ">= 0"})

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not 0 <= value <= 1:
                raise ConfigError(f"{name}={value}", field=f"satisfaction.{name}",
                                  fix="use a value in [0, 1]")


@dataclass
class PolicyModel:
    """How the logged (production) recommender picks the next item from the context item."""

    same_leaf: float = field(default=0.50, metadata={
        "help": "probability the next item is from the context item's leaf; in [0, 1]"})
    sibling_leaf: float = field(default=0.15, metadata={
        "help": "probability it is from a sibling leaf (same level-3 topic); in [0, 1]"})
    same_l2: float = field(default=0.17, metadata={
        "help": "probability of a serendipitous jump at (l=3, δ=1): another level-3 topic of "
                "the same level-2 topic; in [0, 1]"})
    same_l1: float = field(default=0.08, metadata={
        "help": "probability it is from the same level-1 topic; in [0, 1]"})
    back_to_interest: float = field(default=0.10, metadata={
        "help": "probability the user returns to one of their interests; in [0, 1] (the "
                "rest, up to 1 in all: a random item)"})

    def __post_init__(self) -> None:
        values = asdict(self)
        for name, value in values.items():
            if not 0 <= value <= 1:
                raise ConfigError(f"{name}={value}", field=f"policy.{name}",
                                  fix="use a probability in [0, 1]")
        if sum(values.values()) > 1 + 1e-9:
            raise ConfigError(f"probabilities sum to {sum(values.values()):.3f}",
                              field="policy", fix="make them sum to at most 1")


@dataclass
class SynthConfig:
    """The synthetic short-video platform (items with a hidden 4-level taxonomy, users with
    hidden bridge affinities, logged interactions); validated on construction."""

    items: int = field(default=2000, metadata={
        "help": "items in the catalogue; >= the number of leaf topics (product of branching)"})
    users: int = field(default=500, metadata={"help": "users; >= 1"})
    interactions: int = field(default=20000, metadata={
        "help": "logged (context, next item) interactions; >= users"})
    seed: int = field(default=0, metadata={"help": "seed of every random draw"})
    branching: tuple[int, int, int, int] = field(default=(4, 3, 4, 2), metadata={
        "help": "children per level of the hidden taxonomy, [l1, l2, l3, l4]; at most "
                "[8, 6, 6, 4] (the name lists), l3 >= 2 so every leaf has a bridge"})
    zipf_s: float = field(default=1.05, metadata={
        "help": "Zipf exponent of item popularity (impressions ∝ rank^-s); > 0"})
    mean_session: float = field(default=6.0, metadata={
        "help": "mean session length, in interactions (geometric, clipped to 1..30); >= 1"})
    affinity_prob: float = field(default=0.8, metadata={
        "help": "chance a user has the hidden affinity for an interest's bridge topic; in "
                "[0, 1]"})
    title_p: tuple[float, float, float, float] = field(
        default=(0.25, 0.45, 0.30, 0.25), metadata={
            "help": "probability a title has a word of taxonomy level 1..4, [p1, p2, p3, p4]; "
                    "each in [0, 1]"})
    title_p_misleading: float = field(default=0.15, metadata={
        "help": "probability a title has a misleading word of another topic; in [0, 1]"})
    days: int = field(default=30, metadata={
        "help": "time span of the logs, in days from 2026-01-01; >= 1"})
    satisfaction: SatisfactionModel = field(default_factory=SatisfactionModel, metadata={
        "help": "mean satisfaction by relation to the user's interests"})
    policy: PolicyModel = field(default_factory=PolicyModel, metadata={
        "help": "how the logged recommender picks the next item"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        b1, b2, b3, b4 = self.branching
        if not (1 <= b1 <= len(L1) and 1 <= b2 <= min(len(v) for v in L2.values())
                and 2 <= b3 <= len(L3) and 1 <= b4 <= len(L4)):
            raise ConfigError(f"branching {self.branching} is out of range", field="branching",
                              fix=f"use at most {len(L1)}/6/{len(L3)}/{len(L4)}, with >= 2 "
                                  "at level 3 so that every leaf has a bridge")
        n_leaves = b1 * b2 * b3 * b4
        if self.items < n_leaves:
            raise ConfigError(f"{self.items} items cannot cover {n_leaves} topics",
                              field="items", fix=f"use --items >= {n_leaves}")
        if self.users < 1:
            raise ConfigError("need at least one user", field="users", fix="use --users >= 1")
        if self.interactions < self.users:
            raise ConfigError(f"{self.interactions} interactions for {self.users} users",
                              field="interactions", fix="use --interactions >= --users")
        if not self.zipf_s > 0:
            raise ConfigError(f"zipf_s={self.zipf_s}", field="zipf_s", fix="use > 0, e.g. 1.05")
        if not self.mean_session >= 1:
            raise ConfigError(f"mean_session={self.mean_session}", field="mean_session",
                              fix="use >= 1 interactions")
        if self.days < 1:
            raise ConfigError(f"days={self.days}", field="days", fix="use >= 1")
        for name, values in (("affinity_prob", [self.affinity_prob]),
                             ("title_p", list(self.title_p)),
                             ("title_p_misleading", [self.title_p_misleading])):
            if not all(0 <= v <= 1 for v in values):
                raise ConfigError(f"{name}={values if len(values) > 1 else values[0]}",
                                  field=name, fix="use probabilities in [0, 1]")


@dataclass
class Taxonomy:
    """Latent topic tree with regular branching; leaf index = mixed-radix (a, b, c, d)."""

    branching: tuple[int, int, int, int]
    bridge_l3: np.ndarray   # per leaf: index (0..b3-1) of its bridge level-3 sibling

    @property
    def n_leaves(self) -> int:
        return int(np.prod(self.branching))

    def digits(self, leaf: np.ndarray) -> tuple[np.ndarray, ...]:
        b1, b2, b3, b4 = self.branching
        d = leaf % b4
        c = (leaf // b4) % b3
        b = (leaf // (b4 * b3)) % b2
        a = leaf // (b4 * b3 * b2)
        return a, b, c, d

    def leaf(self, a, b, c, d) -> np.ndarray:
        b1, b2, b3, b4 = self.branching
        return ((a * b2 + b) * b3 + c) * b4 + d

    def node_id(self, level: int, leaf: np.ndarray) -> np.ndarray:
        """Integer id of the level-``level`` ancestor, unique within the level."""
        b1, b2, b3, b4 = self.branching
        div = {1: b2 * b3 * b4, 2: b3 * b4, 3: b4, 4: 1}[level]
        return leaf // div

    def names(self, leaf: int) -> tuple[str, str, str, str]:
        a, b, c, d = (int(x) for x in self.digits(np.asarray(leaf)))
        l1 = L1[a]
        return l1, L2[l1][b], L3[c], L4[d]

    def visual(self, leaf: int) -> tuple[int, int, int, int]:
        """(shape, hue, texture, layout) of a leaf: each level drawn by one visual attribute."""
        b1, b2, b3, b4 = self.branching
        a, b, c, d = (int(x) for x in self.digits(np.asarray(leaf)))
        hue = int(round(360 * (a * b2 + b) / (b1 * b2)))
        return a, hue, c, d


def build_taxonomy(cfg: SynthConfig, rng: np.random.Generator) -> Taxonomy:
    b1, b2, b3, b4 = cfg.branching
    n = b1 * b2 * b3 * b4
    leaves = np.arange(n)
    c = (leaves // b4) % b3
    # Bridge: another level-3 child of the same level-2 parent (never the leaf's own).
    bridge = (c + rng.integers(1, b3, size=n)) % b3
    return Taxonomy(tuple(cfg.branching), bridge)


# ------------------------------------------------------------------ items
def _titles(tax: Taxonomy, leaf: np.ndarray, cfg: SynthConfig, rng) -> list[str]:
    words_by_level = []
    n = len(leaf)
    for i in range(n):
        names = tax.names(int(leaf[i]))
        words: list[str] = []
        for lvl in range(4):
            if rng.random() < cfg.title_p[lvl]:
                words.append(names[lvl])
        if rng.random() < cfg.title_p_misleading:
            other = tax.names(int(rng.integers(tax.n_leaves)))
            words.append(other[int(rng.integers(1, 4))])
        k = int(rng.integers(1, 4))
        words += [FILLER[j] for j in rng.integers(len(FILLER), size=k)]
        order = rng.permutation(len(words))
        words_by_level.append(" ".join(words[j] for j in order))
    return words_by_level


def make_items(tax: Taxonomy, cfg: SynthConfig, rng: np.random.Generator
               ) -> tuple[pa.Table, np.ndarray]:
    n = cfg.items
    ranks = np.arange(1, n + 1)
    impressions = np.floor(2_000_000 / ranks ** cfg.zipf_s).astype(np.int64) + 10
    # Stratify: popularity rank r goes to leaf perm_round[r % n_leaves] so every topic gets
    # the same share of traffic at every level (the tree is then recoverable).
    n_leaves = tax.n_leaves
    rounds = -(-n // n_leaves)
    leaf_by_rank = np.concatenate([rng.permutation(n_leaves) for _ in range(rounds)])[:n]
    order = rng.permutation(n)              # item ids do not reveal popularity
    leaf = np.empty(n, dtype=np.int64)
    imps = np.empty(n, dtype=np.int64)
    leaf[order] = leaf_by_rank
    imps[order] = impressions
    item_ids = [f"v{i:07d}" for i in range(n)]
    seeds = rng.integers(0, 2**31 - 1, size=n)
    thumbs, frames = [], []
    for i in range(n):
        shape, hue, tex, lay = tax.visual(int(leaf[i]))
        motif = int(tax.bridge_l3[leaf[i]])  # the bridge sibling's texture index
        v = media.Visual(shape, hue, tex, lay, motif, int(seeds[i]))
        thumbs.append(media.thumbnail_uri(v))
        frames.append(media.frame_uris(v))
    created = EPOCH_US - rng.integers(0, 90 * 86400 * 10**6, size=n)
    table = pa.table({
        "item_id": item_ids,
        "title": _titles(tax, leaf, cfg, rng),
        "created_at": pa.array(created, pa.int64()).cast(SCHEMAS["items"].field("created_at").type),
        "duration_s": np.round(rng.uniform(8, 58, size=n), 1),
        "thumbnail": thumbs,
        "frames": frames,
        "impressions": imps,
    })
    return table, leaf


# ------------------------------------------------------------------ users & sessions
def make_users(tax: Taxonomy, cfg: SynthConfig, rng) -> tuple[np.ndarray, np.ndarray]:
    """Interests (users × 3 leaf ids, -1 = none) and affinity flags (users × 3)."""
    u = cfg.users
    k = rng.integers(1, 4, size=u)
    interests = rng.integers(0, tax.n_leaves, size=(u, 3))
    interests[np.arange(3)[None, :] >= k[:, None]] = -1
    affinity = (rng.random((u, 3)) < cfg.affinity_prob) & (interests >= 0)
    return interests, affinity


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


def expected_satisfaction(tax: Taxonomy, next_leaf, interests, affinity,
                          s: SatisfactionModel) -> np.ndarray:
    """Noise-free satisfaction of ``next_leaf`` for users with ``interests``/``affinity``.

    The best relation over the user's interests wins; evaluation uses this as the ground truth
    of how much a recommended item would satisfy the user.
    """
    best = np.full(len(next_leaf), s.unrelated)
    na, nb, nc, nd = tax.digits(next_leaf)
    for j in range(interests.shape[1]):
        leaf_j = interests[:, j]
        valid = leaf_j >= 0
        lj = np.where(valid, leaf_j, 0)
        ia, ib, ic, idd = tax.digits(lj)
        same_l1 = valid & (ia == na)
        same_l2 = same_l1 & (ib == nb)
        same_l3 = same_l2 & (ic == nc)
        same_leaf = same_l3 & (idd == nd)
        bridge = same_l2 & (tax.bridge_l3[lj] == nc) & affinity[:, j]
        val = np.where(same_l1, s.same_l1, s.unrelated)
        val = np.where(same_l2, s.same_l2, val)
        val = np.where(same_l3, s.sibling_leaf, val)
        val = np.where(same_leaf, s.familiar, val)
        val = np.where(bridge, s.bridge_affinity, val)
        best = np.maximum(best, val)
    return best


def _satisfaction(tax: Taxonomy, next_leaf, interests, affinity, cfg: SynthConfig, rng):
    s = cfg.satisfaction
    best = expected_satisfaction(tax, next_leaf, interests, affinity, s)
    return np.clip(best + rng.normal(0, s.noise, len(best)), 0.0, 1.0)


def with_context(interests: np.ndarray, affinity: np.ndarray, ctx_leaf: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The context item acts as a momentary interest: viewers of a topic enjoy its bridge if
    the user is open to bridges (has the affinity for any of their own interests)."""
    return (np.concatenate([interests, ctx_leaf[:, None]], axis=1),
            np.concatenate([affinity, affinity.any(axis=1)[:, None]], axis=1))


def _next_leaf(tax: Taxonomy, ctx_leaf, user_interest_leaf, cfg: SynthConfig, rng):
    p = cfg.policy
    b1, b2, b3, b4 = tax.branching
    a, b, c, d = tax.digits(ctx_leaf)
    n = len(ctx_leaf)
    r = rng.random(n)
    edges = np.cumsum([p.same_leaf, p.sibling_leaf, p.same_l2, p.same_l1, p.back_to_interest])
    out = rng.integers(0, tax.n_leaves, size=n)                       # random
    sib_d = (d + rng.integers(1, max(b4, 2), size=n)) % b4 if b4 > 1 else d
    l2_c = (c + rng.integers(1, b3, size=n)) % b3
    l1_b = (b + rng.integers(1, max(b2, 2), size=n)) % b2 if b2 > 1 else b
    out = np.where(r < edges[4], user_interest_leaf, out)
    out = np.where(r < edges[3], tax.leaf(a, l1_b, rng.integers(0, b3, size=n),
                                           rng.integers(0, b4, size=n)), out)
    out = np.where(r < edges[2], tax.leaf(a, b, l2_c, rng.integers(0, b4, size=n)), out)
    out = np.where(r < edges[1], tax.leaf(a, b, c, sib_d), out)
    out = np.where(r < edges[0], ctx_leaf, out)
    return out


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


# ------------------------------------------------------------------ ground truth
def truth_tables(tax: Taxonomy, leaf: np.ndarray, interests, affinity, cfg: SynthConfig
                 ) -> dict[str, pa.Table]:
    nodes = []
    for lvl in (1, 2, 3, 4):
        seen = set()
        for lf in range(tax.n_leaves):
            nid = int(tax.node_id(lvl, np.asarray(lf)))
            if nid in seen:
                continue
            seen.add(nid)
            names = tax.names(lf)
            parent = int(tax.node_id(lvl - 1, np.asarray(lf))) if lvl > 1 else None
            nodes.append({"level": lvl, "node": nid, "parent": parent,
                          "name": " > ".join(names[:lvl])})
    b4 = tax.branching[3]
    leaves = np.arange(tax.n_leaves)
    a, b, c, d = tax.digits(leaves)
    bridge_l3 = tax.node_id(3, tax.leaf(a, b, tax.bridge_l3, 0))
    u_rows = [(f"u{u:06d}", int(interests[u, j]), bool(affinity[u, j]))
              for u in range(cfg.users) for j in range(3) if interests[u, j] >= 0]
    return {
        "taxonomy": pa.Table.from_pylist(nodes),
        "bridges": pa.table({"leaf": leaves, "l3": tax.node_id(3, leaves),
                             "bridge_l3": bridge_l3,
                             "bridge_leaves": [list(range(int(x) * b4, int(x) * b4 + b4))
                                               for x in bridge_l3]}),
        "item_topics": pa.table({"item_id": [f"v{i:07d}" for i in range(len(leaf))],
                                 "leaf": leaf,
                                 **{f"l{k}": tax.node_id(k, leaf) for k in (1, 2, 3)}}),
        "user_interests": pa.table({"user_id": [r[0] for r in u_rows],
                                    "leaf": [r[1] for r in u_rows],
                                    "affinity": [r[2] for r in u_rows]}),
    }


def recall_ceiling(tax: Taxonomy, leaf: np.ndarray, interactions: pa.Table) -> dict:
    """How often the log-derived label can equal the true bridge, with perfect clusters.

    For every context item with serendipitous next items (other level-3 topic, same level-2),
    the label is the next level-3 topic with the highest mean satisfaction; the ceiling is the
    share of context items whose label is their leaf's bridge. Noise and rare bridges keep it
    below 1: no model trained on these labels should be expected to beat it.
    """
    import pandas as pd

    idx = {f"v{i:07d}": i for i in range(len(leaf))}
    ctx = np.array([idx[x] for x in interactions.column("context_item_id").to_pylist()])
    nxt = np.array([idx[x] for x in interactions.column("next_item_id").to_pylist()])
    cl, nl = leaf[ctx], leaf[nxt]
    c3, n3 = tax.node_id(3, cl), tax.node_id(3, nl)
    c2, n2 = tax.node_id(2, cl), tax.node_id(2, nl)
    ser = (c3 != n3) & (c2 == n2)
    df = pd.DataFrame({"ctx": ctx[ser], "n3": n3[ser],
                       "sat": interactions.column("satisfaction").to_numpy()[ser]})
    if df.empty:
        return {"context_items": 0, "recall_ceiling": 0.0}
    agg = df.groupby(["ctx", "n3"], sort=True)["sat"].mean().reset_index()
    top = agg.loc[agg.groupby("ctx")["sat"].idxmax()]
    a, b, c, d = tax.digits(leaf[top["ctx"].to_numpy()])
    truth = tax.node_id(3, tax.leaf(a, b, tax.bridge_l3[leaf[top["ctx"].to_numpy()]], 0))
    hit = truth == top["n3"].to_numpy()
    sim = (c3 == n3)
    sat = interactions.column("satisfaction").to_numpy()
    return {"context_items": int(len(top)), "recall_ceiling": float(hit.mean()),
            "serendipitous_pairs": int(ser.sum()), "similar_pairs": int(sim.sum()),
            "mean_satisfaction_serendipitous": float(sat[ser].mean()),
            "mean_satisfaction_similar": float(sat[sim].mean())}


def synthesize(cfg: SynthConfig) -> dict[str, pa.Table]:
    """Generate items, interactions and ground truth (in memory)."""
    cfg.check()
    rng = np.random.default_rng(cfg.seed)
    tax = build_taxonomy(cfg, rng)
    items, leaf = make_items(tax, cfg, rng)
    interests, affinity = make_users(tax, cfg, rng)
    inter = make_interactions(tax, leaf, items.column("impressions").to_numpy(),
                              interests, affinity, cfg, rng)
    out = {"items": items, "interactions": inter}
    out.update({f"truth/{k}": v for k, v in truth_tables(tax, leaf, interests, affinity, cfg).items()})
    out["_taxonomy"] = tax  # type: ignore[assignment]
    out["_leaf"] = leaf     # type: ignore[assignment]
    return out


def write_synth(cfg: SynthConfig, out_dir: str | Path, with_ceiling: bool = True) -> dict:
    """Generate the platform and write it under ``out_dir``; returns a summary."""
    out = Path(out_dir)
    data = synthesize(cfg)
    tax, leaf = data.pop("_taxonomy"), data.pop("_leaf")
    write_table(out, "items", data["items"])
    write_table(out, "interactions", data["interactions"], refs={"items": data["items"]})
    for name, table in data.items():
        if name.startswith("truth/"):
            atomic_write_parquet(table, out / f"{name}.parquet")
    summary = {"items": data["items"].num_rows, "interactions": data["interactions"].num_rows,
               "users": cfg.users, "leaves": tax.n_leaves, "branching": list(tax.branching)}
    if with_ceiling:
        summary.update(recall_ceiling(tax, leaf, data["interactions"]))
    meta = {"config": asdict(cfg), "summary": summary}
    atomic_write_bytes(out / "truth" / "truth.json", json.dumps(meta, indent=2).encode())
    return summary
