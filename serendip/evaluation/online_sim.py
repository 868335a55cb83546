"""Online simulation (paper §4): replay context items and compare recommenders on the
synthetic platform's ground truth.

Recommenders, each returning ``k`` items for (user, history, context item):

* ``exploitation`` — the sequence retriever over the user's history, unrestricted;
* ``exploration``  — the items most similar to the context item (content embeddings);
* ``bandit``       — Thompson sampling over the level-l clusters that share the context's
  level-(l-δ) ancestor, rewarded by simulated satisfaction, then the retriever in that cluster;
* ``serendip``     — ours: the MLLM's serendipitous cluster for the context item, then the
  retriever restricted to it;
* ``blend``        — the paper's live setting: exploitation's slate with ours added
  (:mod:`serendip.blend`, default 2 of 10 items serendipitous).

Metrics per recommender and seed: true satisfaction (oracle), relevance rate, serendipity
(relevant and unexpected), the paper's cluster serendipity, novelty, intra-list diversity,
catalogue coverage and novel-impression ratio. Reported relative to exploitation, as the
paper's Figure 6, with 95% confidence intervals over seeds.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from serendip.errors import ConfigError
from serendip.evaluation import beyond
from serendip.evaluation.truth import GroundTruth

Recommender = Callable[[str, list[str], str, int], list[str]]
METRICS = ("satisfaction", "relevance_rate", "serendipity", "cluster_serendipity", "novelty",
           "diversity", "coverage", "novel_impression_ratio")


@dataclass
class OnlineSimConfig:
    """The online simulation on the synthetic platform's ground truth (paper §4.3's A/B test,
    simulated); validated on construction."""

    n_contexts: int = field(default=400, metadata={
        "help": "context items (user, video) simulated per seed; >= 1"})
    k: int = field(default=10, metadata={"help": "recommendations per context; >= 1"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2, 3, 4), metadata={
        "help": "simulation seeds (the spread across seeds is reported); at least one"})
    level: int = field(default=3, metadata={
        "help": "l of the serendipitous definition; 1..4"})
    delta: int = field(default=1, metadata={
        "help": "δ of the serendipitous definition; 1..level"})
    relevance_threshold: float = field(default=0.5, metadata={
        "help": "a recommendation satisfies at or above this mean satisfaction; in [0, 1]"})
    history_len: int = field(default=20, metadata={
        "help": "most recent items of the user's history the retriever sees; >= 1"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        for name in ("n_contexts", "k", "history_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}", field=name, fix="use >= 1")
        if not self.seeds:
            raise ConfigError("no seeds", field="seeds", fix="give at least one seed")
        if not 0 <= self.relevance_threshold <= 1:
            raise ConfigError(f"relevance_threshold={self.relevance_threshold}",
                              field="relevance_threshold", fix="use a value in [0, 1]")
        from serendip.candidates import check_level_delta

        check_level_delta(self.level, self.delta)


@dataclass
class Context:
    user_id: str
    history: list[str]
    item_id: str


def sample_contexts(interactions: pa.Table, n: int, history_len: int, seed: int) -> list[Context]:
    """Random (user, history before t, context item at t) from the logs."""
    df = interactions.select(["user_id", "context_item_id", "next_item_id", "ts"]).to_pandas()
    df = df.sort_values(["user_id", "ts"], kind="stable")
    rng = np.random.default_rng(seed)
    seqs = {u: g.next_item_id.tolist() for u, g in df.groupby("user_id", sort=True)}
    users = [u for u, s in seqs.items() if len(s) >= 2]
    out = []
    for u in rng.choice(users, size=min(n, len(users)), replace=len(users) < n):
        s = seqs[u]
        t = int(rng.integers(1, len(s)))
        out.append(Context(str(u), s[max(0, t - history_len):t], s[t]))
    return out


class ThompsonClusterBandit:
    """Beta–Bernoulli Thompson sampling over sibling clusters of the context's cluster."""

    def __init__(self, cluster_at: Mapping[str, Sequence[str]], level: int, delta: int, seed: int):
        self.cluster_at, self.level, self.delta = cluster_at, level, delta
        self.rng = np.random.default_rng(seed)
        self.children: dict[str, list[str]] = defaultdict(list)
        for path in {tuple(p) for p in cluster_at.values()}:
            parent, child = path[level - delta - 1], path[level - 1]
            if child not in self.children[parent]:
                self.children[parent].append(child)
        self.alpha: dict[tuple[str, str], float] = defaultdict(lambda: 1.0)
        self.beta: dict[tuple[str, str], float] = defaultdict(lambda: 1.0)

    def choose(self, context: str) -> str:
        path = self.cluster_at[context]
        own, parent = path[self.level - 1], path[self.level - self.delta - 1]
        arms = sorted(c for c in self.children[parent] if c != own) or [own]
        draws = [self.rng.beta(self.alpha[(own, a)], self.beta[(own, a)]) for a in arms]
        return arms[int(np.argmax(draws))]

    def update(self, context: str, arm: str, rewards: Sequence[float]) -> None:
        own = self.cluster_at[context][self.level - 1]
        for r in rewards:
            hit = self.rng.random() < r
            self.alpha[(own, arm)] += hit
            self.beta[(own, arm)] += 1 - hit


@dataclass
class SimResult:
    per_seed: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    n_contexts: int = 0

    def summary(self, reference: str = "exploitation") -> dict:
        """Mean, 95% CI over seeds, and change relative to ``reference`` for every metric."""
        out: dict = {"n_contexts": self.n_contexts, "reference": reference, "models": {}}
        for model, metrics in self.per_seed.items():
            out["models"][model] = {}
            for name, vals in metrics.items():
                v = np.asarray(vals, dtype=float)
                ref = np.asarray(self.per_seed[reference][name], dtype=float)
                rel = (v - ref) / np.where(np.abs(ref) > 1e-12, np.abs(ref), np.nan)
                out["models"][model][name] = {
                    "mean": float(v.mean()), "ci95": _ci(v),
                    "rel_to_reference": float(np.nanmean(rel)) if np.isfinite(rel).any() else None,
                    "rel_ci95": _ci(rel[np.isfinite(rel)]) if np.isfinite(rel).any() else None,
                }
        return out


def _ci(v: np.ndarray) -> float:
    """Half-width of a 95% t-interval (0 for a single seed)."""
    n = len(v)
    if n < 2:
        return 0.0
    t = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26}.get(n, 1.96)
    return float(t * v.std(ddof=1) / math.sqrt(n))


def run_online_sim(make_recommenders: Callable[[int], Mapping[str, Recommender]],
                   interactions: pa.Table, truth: GroundTruth,
                   cluster_at: Mapping[str, Sequence[str]], emb: Mapping[str, np.ndarray],
                   catalog_size: int, cfg: OnlineSimConfig, progress: bool = True) -> SimResult:
    """Replay sampled contexts through every recommender and score them on the oracle.

    ``make_recommenders(seed)`` builds fresh recommenders per seed, so learning ones (the
    bandit) start from their prior each time and seeds are independent replicates.
    """
    cfg.check()
    users_per_item = Counter()
    df = interactions.select(["user_id", "next_item_id"]).to_pandas().drop_duplicates()
    users_per_item.update(df.next_item_id.tolist())
    n_users = len(interactions.column("user_id").unique())
    item_nov = beyond.historical_item_novelty(users_per_item, n_users)
    result = SimResult()
    seeds = cfg.seeds
    iterator = seeds
    if progress:
        from tqdm import tqdm
        iterator = tqdm(seeds, desc="online simulation (seeds)")
    for seed in iterator:
        contexts = sample_contexts(interactions, cfg.n_contexts, cfg.history_len, seed)
        result.n_contexts = len(contexts)
        recommenders = make_recommenders(seed)
        for name in recommenders:
            result.per_seed.setdefault(name, defaultdict(list))
        recs: dict[str, list[list[str]]] = {}
        for name, rec in recommenders.items():
            lists = []
            for c in contexts:
                items = [i for i in rec(c.user_id, c.history, c.item_id, cfg.k) if i in emb][: cfg.k]
                lists.append(items)
            recs[name] = lists
        # a blend is made of exploitation and serendip: keep it out of the others' pool, and
        # judge it against the production arms it does not contain (as the replay's arms are)
        blends = {"blend": ("exploitation", "serendip")}
        nir = beyond.novel_impression_ratio({m: r for m, r in recs.items() if m not in blends})
        for b, parts in blends.items():
            if b in recs:
                pool = {m: r for m, r in recs.items() if m not in blends and m not in parts}
                nir[b] = beyond.novel_impression_ratio({b: recs[b], **pool})[b]
        for name, lists in recs.items():
            sats, rels = [], []
            for c, items in zip(contexts, lists):
                s = truth.expected([c.user_id] * len(items), [c.item_id] * len(items), items) \
                    if items else np.zeros(0)
                sats.append(s)
                rels.append((s >= cfg.relevance_threshold).astype(float))
            flat = np.concatenate(sats) if sats else np.zeros(0)
            m = result.per_seed[name]
            m["satisfaction"].append(float(flat.mean()) if len(flat) else 0.0)
            m["relevance_rate"].append(float((flat >= cfg.relevance_threshold).mean()) if len(flat) else 0.0)
            m["serendipity"].append(beyond.serendipity(
                lists, [c.history or [c.item_id] for c in contexts], rels, emb))
            m["cluster_serendipity"].append(beyond.cluster_serendipity(
                lists, [c.item_id for c in contexts], cluster_at, cfg.level, cfg.delta))
            m["novelty"].append(beyond.novelty(lists, item_nov))
            m["diversity"].append(beyond.intra_list_diversity(lists, emb))
            m["coverage"].append(beyond.catalog_coverage(lists, catalog_size))
            m["novel_impression_ratio"].append(nir[name])
    return result
