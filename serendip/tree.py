"""Hierarchical, traffic-balanced cluster tree with unique natural-language descriptions.

Paper §2: items are organised in a 4-level tree of "equal-sized and traffic-weighted" clusters,
level 1 broadest; every cluster has a unique description the MLLM learns to generate.

The shape: ``branching="auto"`` (default) follows the catalogue size, about
``auto_leaf_items`` (25) items per leaf (:func:`auto_branching`: 6,000 items → 4/4/4/4, never
wider than the paper's 8/8/8/8); ``stats["branching"]`` says what was chosen and why.

Built top-down. For every node:

1. **centroids** — faiss k-means on the node's item embeddings (unweighted, so that a handful of
   viral items do not own the centroids);
2. **balanced assignment** — nearest centroid, then a greedy repair that moves the items with
   the smallest cost increase per unit of traffic from over- to under-loaded children until
   sibling traffic (impressions) is within ``balance_tol`` (max/min), wherever single items
   allow it, while every child keeps enough items to be split further; centroids are then
   recomputed from the members and the assignment repeated. (``assignment="sinkhorn"``
   starts from an entropic optimal-transport plan with equal traffic shares per child
   instead; on the synthetic platform it recovers the latent topics worse: ARI 0.84 vs 0.99
   at level 1.) A child holding an item that alone breaks the bound cannot be balanced; it
   keeps its members and the others are balanced among themselves. ``stats["levelN"]``
   names every sibling group outside the bound with its reason (:func:`balance_achievable`:
   a dominant item, or items too coarse to close the gap); everywhere else max/min <= tol;
3. **descriptions** — :mod:`serendip.descriptions`: Unicode-aware tokens, stop words of the
   common languages, units and numbers never used, phrases ranked by c-TF-IDF among siblings,
   every word in >= ``description_min_share`` of the members (titles or labels), unique by a
   distinguishing term, never a number; ``stats["descriptions"]`` reports the grounding.

Cluster ids are path-style (``"3.1.0.2"``, see INTERFACES.md). New items are placed with
:func:`assign_items` (nearest centroid per level, top-down) or :func:`assign_new_items` (which
also embeds them with the saved :class:`~serendip.embeddings.Embedder`); batch scoring needs
it. The tree saves as ``tree.json`` + ``centroids.safetensors`` (no pickle).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from serendip.data.schemas import SCHEMAS
from serendip.descriptions import (  # the description functions live there; re-exported
    TITLE_FILLER,  # noqa: F401
    describe_clusters,
    grounding_report,
    stopwords,  # noqa: F401
    term_counts,  # noqa: F401
)
from serendip.embeddings import EmbeddingConfig
from serendip.errors import ConfigError, SerendipError

LEVELS = 4
TREE_JSON = "tree.json"
TREE_DIR = "cluster_tree"
EMBEDDER_SUBDIR = "embedder"
CENTROIDS_FILE = "centroids.safetensors"



@dataclass
class ClusterConfig:
    """How the tree is shaped and balanced; defaults follow the paper (4 levels).

    ``branching="auto"`` (the default) follows the catalogue size: see :func:`auto_branching`;
    the built tree's config holds the branching chosen and ``stats["branching"]`` says why.
    """

    branching: tuple[int, ...] | str = "auto"
    auto_leaf_items: int = 25       # auto branching: about this many items per leaf
    seed: int = 0
    kmeans_iters: int = 20
    kmeans_redo: int = 3            # faiss restarts per node; the best objective wins
    threads: int = 1                # faiss OpenMP threads while building (nodes are small:
                                    # more threads mostly spin on a shared machine)
    kmeans_max_points_per_centroid: int = 256   # faiss subsamples larger nodes for speed
    traffic_power: float = 1.0      # balance impressions**p: 1 = traffic, 0 = item counts
    balance_tol: float = 1.2        # target max/min traffic among siblings
    balance_rounds: int = 2         # assign → recompute centroids → assign
    assignment: str = "greedy"      # greedy: nearest centroid + cheapest-move repair;
                                    # sinkhorn: entropic OT with equal traffic shares + repair
    sinkhorn_iters: int = 200
    sinkhorn_eps: float = 0.05      # entropic regularisation, relative to the mean cost
    min_leaf_items: int = 1         # every leaf keeps at least this many items
    description_words: int = 2      # own terms a clash may use before the parent's words
    description_parent_level: int = 3   # from this level on, descriptions start with the
                                        # parent's ("football" → "football tricks")
    description_min_lift: float = 1.5   # a term must be this over-represented vs its parent
    description_min_share: float = 0.1  # a description word occurs in >= this share of the
                                        # cluster's members (titles or labels)
    extra_stopwords: tuple[str, ...] = ()

    def check(self) -> None:
        if isinstance(self.branching, str):
            self.branching = parse_branching(self.branching)
        if self.branching != "auto":
            b = tuple(self.branching)
            if len(b) != LEVELS or any(int(x) < 2 for x in b):
                raise ConfigError(f"branching {list(b)} must have {LEVELS} levels, each >= 2",
                                  field="branching",
                                  fix="use e.g. --branching auto, 8/8/8/8 or 4/3/4/2")
        if self.auto_leaf_items < 1:
            raise ConfigError(f"auto_leaf_items={self.auto_leaf_items}", field="auto_leaf_items",
                              fix="use auto_leaf_items >= 1, e.g. 25")
        if not 0.0 <= self.description_min_share <= 1.0:
            raise ConfigError(f"description_min_share={self.description_min_share}",
                              field="description_min_share", fix="use a share in [0, 1], e.g. 0.1")
        if self.balance_tol < 1.0:
            raise ConfigError(f"balance_tol={self.balance_tol} < 1", field="balance_tol",
                              fix="use a max/min ratio >= 1, e.g. 1.2")
        if self.traffic_power < 0:
            raise ConfigError(f"traffic_power={self.traffic_power}", field="traffic_power",
                              fix="use 0 (equal item counts) to 1 (equal traffic)")
        if self.assignment not in ("greedy", "sinkhorn"):
            raise ConfigError(f"unknown assignment {self.assignment!r}", field="assignment",
                              fix="use greedy or sinkhorn")
        if self.min_leaf_items < 1:
            raise ConfigError(f"min_leaf_items={self.min_leaf_items}", field="min_leaf_items",
                              fix="use min_leaf_items >= 1")
        if self.description_words < 1:
            raise ConfigError(f"description_words={self.description_words}",
                              field="description_words", fix="use description_words >= 1")


def parse_branching(text: str | tuple | list) -> tuple[int, ...] | str:
    """``"4/3/4/2"`` (or a list) → ``(4, 3, 4, 2)``; ``"auto"`` stays ``"auto"`` (chosen from
    the catalogue size at build time, :func:`auto_branching`).

    Raises:
        ConfigError: anything that is not ``auto`` or 4 integers >= 2.
    """
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = str(text).replace(",", "/").split("/")
    try:
        out = tuple(int(x) for x in parts)
    except (TypeError, ValueError):
        out = ()
    if len(out) != LEVELS or any(x < 2 for x in out):
        raise ConfigError(f"branching {text!r} is not {LEVELS} integers >= 2", field="branching",
                          fix="write it like auto, 8/8/8/8 or 4/3/4/2")
    return out


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


# ------------------------------------------------------------------ the tree object
@dataclass
class ClusterTree:
    """A fitted tree: per level, node ids, parents, centroids and descriptions."""

    config: ClusterConfig
    ids: list[list[str]]                     # per level: cluster ids
    centroids: list[np.ndarray]              # per level: (n_nodes × d) float32
    descriptions: dict[str, str]
    sizes: dict[str, int] = field(default_factory=dict)
    traffic: dict[str, int] = field(default_factory=dict)
    item_clusters: pa.Table | None = None    # assignment of the items the tree was built on
    stats: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.centroids[0].shape[1])

    @property
    def clusters(self) -> pa.Table:
        rows = {"cluster_id": [], "level": [], "parent_id": [], "description": [], "size": [],
                "traffic": []}
        for lvl, ids in enumerate(self.ids, start=1):
            for cid in ids:
                rows["cluster_id"].append(cid)
                rows["level"].append(lvl)
                rows["parent_id"].append(cid.rsplit(".", 1)[0] if lvl > 1 else None)
                rows["description"].append(self.descriptions[cid])
                rows["size"].append(int(self.sizes.get(cid, 0)))
                rows["traffic"].append(int(self.traffic.get(cid, 0)))
        return pa.table(rows, schema=SCHEMAS["clusters"])

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``tree.json`` + ``centroids.safetensors`` atomically into ``out_dir``."""
        from safetensors.numpy import save

        from serendip.data.io import atomic_write_bytes

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"level{lvl}": np.ascontiguousarray(c, np.float32)
                   for lvl, c in enumerate(self.centroids, start=1)}
        atomic_write_bytes(out / CENTROIDS_FILE, save(tensors))
        meta = {"format": 1, "config": _config_dict(self.config), "ids": self.ids,
                "descriptions": self.descriptions, "sizes": self.sizes, "traffic": self.traffic,
                "stats": self.stats}
        atomic_write_bytes(out / TREE_JSON, json.dumps(meta, indent=1).encode())
        return out

    @classmethod
    def load(cls, tree_dir: str | os.PathLike) -> ClusterTree:
        from safetensors.numpy import load_file

        from serendip.config import from_dict

        d = Path(tree_dir)
        if not (d / TREE_JSON).exists() or not (d / CENTROIDS_FILE).exists():
            raise SerendipError(f"no saved cluster tree in {d}", field="cluster_tree",
                                fix="run `serendip cluster` first or pass the right directory")
        meta = json.loads((d / TREE_JSON).read_text())
        tensors = load_file(str(d / CENTROIDS_FILE))
        cfg = from_dict(ClusterConfig, meta["config"])
        return cls(config=cfg, ids=meta["ids"],
                   centroids=[tensors[f"level{lvl}"] for lvl in range(1, LEVELS + 1)],
                   descriptions=meta["descriptions"], sizes=meta.get("sizes", {}),
                   traffic=meta.get("traffic", {}), stats=meta.get("stats", {}))


def _config_dict(cfg: ClusterConfig) -> dict:
    d = asdict(cfg)
    d["branching"] = list(cfg.branching)
    d["extra_stopwords"] = list(cfg.extra_stopwords)
    return d


# ------------------------------------------------------------------ clustering primitives
def kmeans_plusplus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds (D² sampling with 2 + log k local trials, as scikit-learn does) — a few
    vectorised lines, because scikit-learn's call overhead (~10 ms) would dominate thousands
    of small nodes."""
    n = len(x)
    trials = 2 + int(np.log(k))
    centres = np.empty((k, x.shape[1]), np.float32)
    xx = (x * x).sum(1)
    first = int(rng.integers(n))
    centres[0] = x[first]
    d2 = np.maximum(xx - 2.0 * (x @ x[first]) + xx[first], 0.0)
    for j in range(1, k):
        total = d2.sum()
        if total <= 0:
            centres[j:] = x[rng.integers(n, size=k - j)]
            break
        cand = np.searchsorted(np.cumsum(d2), rng.random(trials) * total).clip(0, n - 1)
        cd = np.maximum(xx[None, :] - 2.0 * (x[cand] @ x.T) + xx[cand][:, None], 0.0)
        new = np.minimum(d2[None, :], cd)
        best = int(np.argmin(new.sum(1)))
        centres[j] = x[cand[best]]
        d2 = new[best]
    return centres


def kmeans_centroids(x: np.ndarray, k: int, cfg: ClusterConfig, seed: int) -> np.ndarray:
    """k centroids of ``x``: faiss k-means from k-means++ seeds, best of ``kmeans_redo``
    restarts; large nodes are subsampled to ``k × max_points_per_centroid`` points."""
    import faiss

    x = np.ascontiguousarray(x, np.float32)
    if len(x) <= k:
        return x[:k].copy()
    rng = np.random.default_rng(seed)
    cap = k * cfg.kmeans_max_points_per_centroid
    sample = x[np.sort(rng.choice(len(x), cap, replace=False))] if len(x) > cap else x
    best, best_obj = None, np.inf
    for r in range(max(1, cfg.kmeans_redo)):
        init = kmeans_plusplus(sample, k, rng)
        km = faiss.Kmeans(x.shape[1], k, niter=cfg.kmeans_iters, seed=int(seed + r) % (2**31 - 1),
                          max_points_per_centroid=cfg.kmeans_max_points_per_centroid,
                          min_points_per_centroid=1, verbose=False)
        km.train(sample, init_centroids=init)
        obj = float(km.obj[-1]) if len(km.obj) else 0.0
        if obj < best_obj:
            best, best_obj = np.asarray(km.centroids, np.float32).copy(), obj
    return best


def _sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    d = (x * x).sum(1, keepdims=True) - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def sinkhorn(cost: np.ndarray, row_mass: np.ndarray, col_mass: np.ndarray, eps: float,
             iters: int) -> np.ndarray:
    """Entropic OT plan (n × k) between row and column masses (each summing to 1)."""
    c = cost - cost.min(axis=1, keepdims=True)          # row shifts are absorbed by u
    scale = float(c.mean()) or 1.0
    kern = np.exp(-c / (eps * scale))
    kern = np.maximum(kern, 1e-300)
    v = np.ones(cost.shape[1])
    for _ in range(iters):
        u = row_mass / np.maximum(kern @ v, 1e-300)
        v_new = col_mass / np.maximum(kern.T @ u, 1e-300)
        if np.allclose(v_new, v, rtol=1e-6, atol=0):
            v = v_new
            break
        v = v_new
    u = row_mass / np.maximum(kern @ v, 1e-300)
    return u[:, None] * kern * v[None, :]


def balance_assignment(cost: np.ndarray, weight: np.ndarray, assign: np.ndarray, tol: float,
                       min_count: int, max_rounds: int = 64) -> np.ndarray:
    """Greedy repair of a hard assignment.

    First every child gets ``min_count`` items (so it can still be split down to the leaves).
    Then, while max/min traffic > ``tol``: the heaviest child sheds, or the lightest child
    pulls, the items with the smallest cost increase per unit of traffic. Every move goes from a
    heavier to a lighter child by less than their difference, so the sum of squared loads
    strictly falls and the loop ends; items heavier than any possible improvement stay put.
    """
    n, k = cost.shape
    assign = assign.copy()
    for _ in range(k * 2):
        counts = np.bincount(assign, minlength=k)
        short = np.flatnonzero(counts < min_count)
        if len(short) == 0:
            break
        j = int(short[0])
        need = int(min_count - counts[j])
        cand = np.flatnonzero((counts[assign] > min_count) & (assign != j))
        delta = cost[cand, j] - cost[cand, assign[cand]]
        spare = counts - min_count
        taken: list[int] = []
        for i in cand[np.lexsort((weight[cand], delta))]:
            if spare[assign[i]] > 0:
                spare[assign[i]] -= 1
                taken.append(int(i))
                if len(taken) == need:
                    break
        assign[taken] = j
    loads = np.bincount(assign, weights=weight, minlength=k)
    counts = np.bincount(assign, minlength=k)
    active = np.ones(k, bool)       # children that still take part in balancing
    w_safe = np.maximum(weight, 1e-18)
    for _ in range(max_rounds):
        act = np.flatnonzero(active)
        if len(act) < 2:
            break
        hi, lo = int(act[np.argmax(loads[act])]), int(act[np.argmin(loads[act])])
        if loads[hi] <= tol * max(loads[lo], 1e-18):
            break
        avg = loads[act].mean()
        members = np.flatnonzero(assign == hi)
        h = weight[members].max()
        if h > tol * (loads[act].sum() - h) / (len(act) - 1):
            # Even holding this one item alone, the child would break the bound against an
            # even split of the rest: it cannot be balanced. Keep its members (shedding them
            # would not reach the bound) and balance the others among themselves.
            active[hi] = False
            continue
        moved = 0
        # (a) the heaviest child sheds items to lighter children
        if counts[hi] > min_count:
            delta = cost[np.ix_(members, act)] - cost[members, hi][:, None]
            delta[:, act == hi] = np.inf
            delta[weight[members][:, None] >= (loads[hi] - loads[act])[None, :]] = np.inf
            best = np.min(delta, axis=1)
            ok = np.isfinite(best)
            for idx in members[ok][np.argsort(best[ok] / w_safe[members[ok]], kind="stable")]:
                if loads[hi] <= avg or counts[hi] <= min_count:
                    break
                w = weight[idx]
                d = cost[idx, act] - cost[idx, hi]
                d[act == hi] = np.inf
                d[w >= loads[hi] - loads[act]] = np.inf
                j = int(act[np.argmin(d)])
                if not np.isfinite(d.min()):
                    continue
                assign[idx] = j
                loads[hi] -= w; loads[j] += w
                counts[hi] -= 1; counts[j] += 1
                moved += 1
        # (b) the lightest child pulls items from heavier children
        if loads[lo] < avg:
            src = assign
            cand = np.flatnonzero(active[src] & (src != lo) & (counts[src] > min_count)
                                  & (weight < loads[src] - loads[lo]))
            if len(cand):
                delta = cost[cand, lo] - cost[cand, src[cand]]
                for idx in cand[np.argsort(delta / w_safe[cand], kind="stable")]:
                    if loads[lo] >= avg:
                        break
                    a, w = int(assign[idx]), weight[idx]
                    if counts[a] <= min_count or w >= loads[a] - loads[lo]:
                        continue
                    assign[idx] = lo
                    loads[a] -= w; loads[lo] += w
                    counts[a] -= 1; counts[lo] += 1
                    moved += 1
        # (c) chunky items (small nodes): swap one item of the heaviest child for a lighter
        # one of the lightest child, moving about half their difference
        if not moved:
            moved = _swap(cost, weight, assign, loads, hi, lo)
        if not moved:
            break
    return assign


def _swap(cost: np.ndarray, weight: np.ndarray, assign: np.ndarray, loads: np.ndarray,
          hi: int, lo: int, cap: int = 1500) -> bool:
    """Exchange i (in ``hi``) and j (in ``lo``) with 0 < w_i - w_j < gap, closest to gap/2
    (ties: cheapest); updates ``assign`` and ``loads`` in place. Returns whether it swapped."""
    gap = loads[hi] - loads[lo]
    a, b = np.flatnonzero(assign == hi), np.flatnonzero(assign == lo)
    if len(a) > cap:
        a = a[np.argsort(-weight[a], kind="stable")[:cap]]
    if len(b) > cap:
        b = b[np.argsort(-weight[b], kind="stable")[:cap]]
    d = weight[a][:, None] - weight[b][None, :]
    ok = (d > 0) & (d < gap)
    if not ok.any():
        return False
    extra = (cost[a, lo][:, None] - cost[a, hi][:, None]) + (cost[b, hi][None, :] - cost[b, lo][None, :])
    score = np.where(ok, np.abs(gap / 2 - d), np.inf)
    best = np.flatnonzero(score.ravel() <= score.min() * (1 + 1e-9) + 1e-15)
    pick = best[np.argmin(extra.ravel()[best])]
    i, j = a[pick // len(b)], b[pick % len(b)]
    assign[i], assign[j] = lo, hi
    loads[hi] -= d.ravel()[pick]
    loads[lo] += d.ravel()[pick]
    return True


def split_node(x: np.ndarray, weight: np.ndarray, k: int, min_count: int, cfg: ClusterConfig,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split one node's items into ``k`` traffic-balanced children; returns (labels, centroids)."""
    n = len(x)
    if n < k * min_count:
        raise ConfigError(f"a node has {n} items, too few for {k} children of >= {min_count}",
                          field="branching", fix="use a smaller branching or more items")
    centroids = kmeans_centroids(x, k, cfg, seed)
    mass = weight / weight.sum() if weight.sum() > 0 else np.full(n, 1.0 / n)
    labels = np.zeros(n, np.int64)
    for _ in range(max(1, cfg.balance_rounds)):
        cost = _sq_dists(x, centroids)
        if cfg.assignment == "sinkhorn":
            plan = sinkhorn(cost, mass, np.full(k, 1.0 / k), cfg.sinkhorn_eps,
                            cfg.sinkhorn_iters)
            labels = np.argmax(plan, axis=1)
        else:
            labels = np.argmin(cost, axis=1)
        labels = balance_assignment(cost, mass, labels, cfg.balance_tol, min_count)
        new = np.stack([x[labels == j].mean(axis=0) if np.any(labels == j) else centroids[j]
                        for j in range(k)]).astype(np.float32)
        centroids = new
    return labels, centroids


# ------------------------------------------------------------------ build
def build_cluster_tree(items: pa.Table, embeddings: np.ndarray,
                       cfg: ClusterConfig | None = None, labels: pa.Table | None = None
                       ) -> ClusterTree:
    """Fit the 4-level tree on ``items`` (item_id, title, impressions; optional ``labels``,
    list<string> or string, e.g. genres, which may also name clusters; or pass ``labels`` as
    an (item_id, labels) table, see :func:`serendip.labels.read_item_labels`) and their embeddings
    (n × d). ``cfg.branching="auto"`` is resolved from the catalogue size
    (:func:`auto_branching`); the tree's config holds the branching used and
    ``stats["branching"]`` says how it was chosen.

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
    faiss.omp_set_num_threads(max(1, cfg.threads))
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


def _active_children(loads: np.ndarray, heaviest: np.ndarray, tol: float) -> np.ndarray:
    """Siblings that can be balanced: a child is left out when even holding its heaviest item
    alone it would exceed ``tol`` × an even split of the rest (applied repeatedly)."""
    act = np.ones(len(loads), bool)
    while act.sum() >= 2:
        sat = act & (heaviest > tol * (loads[act].sum() - heaviest) / (act.sum() - 1))
        if not sat.any():
            break
        act &= ~sat
    return act


def balanceable_ratio(loads: np.ndarray, heaviest: np.ndarray, tol: float) -> float:
    """max/min traffic among the siblings that *can* be balanced (see :func:`_active_children`).
    """
    loads = np.asarray(loads, np.float64)
    act = _active_children(loads, np.asarray(heaviest, np.float64), tol)
    if act.sum() < 2:
        return 1.0
    return float(loads[act].max() / max(loads[act].min(), 1e-12))


def balance_achievable(loads: np.ndarray, heaviest: np.ndarray, tol: float) -> str | None:
    """Why one sibling group is outside ``tol``, or None when it is within (or would be,
    leaving out children that one item dominates).

    Reasons the bound cannot be met: a child dominated by one item (:func:`_active_children`),
    or items too coarse to close the gap (the heaviest item exceeds ``(tol - 1)`` × the mean
    child traffic, so single moves overshoot). Any other excess is reported as
    ``"bound not reached"``: a fault of the assignment, never expected.
    """
    loads = np.asarray(loads, np.float64)
    heaviest = np.asarray(heaviest, np.float64)
    if loads.max() <= tol * max(loads.min(), 1e-12) + 1e-9:
        return None
    act = _active_children(loads, heaviest, tol)
    if not act.all():
        return "one item alone outweighs the bound"
    if heaviest.max() > (tol - 1.0) * loads.mean() + 1e-9:
        return "items too coarse (heaviest item > (tol - 1) x mean child traffic)"
    return "bound not reached"


def balance_stats(nodes: np.ndarray, impressions: np.ndarray, branching: tuple[int, ...],
                  tol: float, ids: list[list[str]] | None = None,
                  traffic_power: float = 1.0) -> dict:
    """Per level: max/min sibling traffic (impressions; worst and median over parents), the
    same among balanceable siblings (see :func:`balanceable_ratio`), the share of sibling
    groups within ``tol``, the level-wide ratio, and the promise, judged on what the tree
    balanced (impressions ** ``traffic_power``): where the bound is not met, the number of
    sibling groups (``unachievable_groups``), up to 10 of them with the reason
    (:func:`balance_achievable`), the count the assignment missed (``not_reached_groups``,
    expected 0) and the worst max/min over the groups where nothing prevents it
    (``achievable_max_min_traffic_worst``, <= ``tol``)."""
    out: dict[str, dict] = {}
    balanced = np.power(np.maximum(impressions, 0.0), traffic_power)
    n_nodes = 1
    for lvl in range(LEVELS):
        k = branching[lvl]
        n_nodes *= k
        loads = np.bincount(nodes[:, lvl], weights=impressions, minlength=n_nodes)
        heaviest = np.zeros(n_nodes)
        np.maximum.at(heaviest, nodes[:, lvl], impressions)
        size = np.bincount(nodes[:, lvl], minlength=n_nodes)
        sib = loads.reshape(-1, k)                 # children of one parent are contiguous
        heavy = heaviest.reshape(-1, k)
        ratios = sib.max(1) / np.maximum(sib.min(1), 1e-12)
        ok = [balanceable_ratio(sib[p], heavy[p], tol) for p in range(len(sib))]
        if traffic_power != 1.0:
            bl = np.bincount(nodes[:, lvl], weights=balanced, minlength=n_nodes).reshape(-1, k)
            bh = np.zeros(n_nodes)
            np.maximum.at(bh, nodes[:, lvl], balanced)
            bh = bh.reshape(-1, k)
        else:
            bl, bh = sib, heavy
        b_ratios = bl.max(1) / np.maximum(bl.min(1), 1e-12)
        why = [balance_achievable(bl[p], bh[p], tol) for p in range(len(sib))]
        promised = [r for r, w in zip(b_ratios, why) if w is None or w == "bound not reached"]
        parents = ids[lvl - 1] if (ids is not None and lvl > 0) else [""] * len(sib)
        out[f"level{lvl + 1}"] = {
            "clusters": int(n_nodes),
            "sibling_max_min_traffic_worst": round(float(ratios.max()), 3),
            "sibling_max_min_traffic_median": round(float(np.median(ratios)), 3),
            "balanceable_max_min_traffic_worst": round(float(np.max(ok)), 3),
            "achievable_max_min_traffic_worst": round(float(max(promised, default=1.0)), 3),
            "unachievable_groups": int(sum(w not in (None, "bound not reached") for w in why)),
            "unachievable": [{"parent": parents[p] or "(root)", "reason": w,
                              "max_min_balanced_traffic": round(float(b_ratios[p]), 3)}
                             for p, w in enumerate(why) if w is not None][:10],
            "not_reached_groups": int(sum(w == "bound not reached" for w in why)),
            "balanced_on": "impressions" if traffic_power == 1.0
                           else f"impressions^{traffic_power:g}",
            "within_tol_share": round(float(np.mean(ratios <= tol + 1e-9)), 3),
            "level_max_min_traffic": round(float(loads.max() / max(loads.min(), 1e-12)), 3),
            "min_size": int(size.min()),
        }
    return out


# ------------------------------------------------------------------ assignment of new items
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
            d = _sq_dists(x[rows], cents[s:s + c])
            new[rows] = s + np.argmin(d, axis=1)
        node = new
        cols.append(np.asarray(level_ids, dtype=object)[node] if n else np.array([], object))
    return pa.table({"item_id": pa.array(ids, pa.string()),
                     **{f"c{lvl + 1}": pa.array(list(cols[lvl]), pa.string())
                        for lvl in range(LEVELS)}}, schema=SCHEMAS["item_clusters"])


# ------------------------------------------------------------------ stage entry (CLI, KFP)
def cluster_configs(settings: dict | None = None) -> tuple[ClusterConfig, EmbeddingConfig]:
    """ClusterConfig + EmbeddingConfig from one mapping: tree fields at the top level,
    embedding fields under ``embedding:`` or as ``embedding.<field>`` keys."""
    from serendip.config import from_dict

    data = dict(settings or {})
    emb = dict(data.pop("embedding", None) or {})
    for key in [k for k in data if k.startswith("embedding.")]:
        emb[key.split(".", 1)[1]] = data.pop(key)
    if "branching" in data:
        data["branching"] = parse_branching(data["branching"])
    cfg, ecfg = from_dict(ClusterConfig, data), from_dict(EmbeddingConfig, emb)
    cfg.check()
    ecfg.check()
    return cfg, ecfg


def cluster_stage(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  cfg: ClusterConfig | None = None, embedding: EmbeddingConfig | None = None,
                  *, use_cache: bool = True) -> ClusterTree:
    """Read ``items`` (and ``interactions`` when present: the behaviour block) from
    ``data_dir``; write embeddings.parquet, cluster_tree/, clusters.parquet and
    item_clusters.parquet to ``out_dir`` (default: ``data_dir``). ``tree.stats`` gains
    ``embedding.blocks`` (each block's weight, dim and distance share) and, when item labels
    exist (``item_labels.parquet`` or a ``labels`` column), ``labels``: NMI/ARI per level
    against the primary label (:func:`serendip.labels.label_agreement`). The tree-structured
    clusters of paper §2.

    Raises:
        SchemaError: a missing or malformed table. ConfigError: as
            :func:`build_cluster_tree`.
    """
    from serendip.data.io import has_table, read_table, write_table
    from serendip.embeddings import EMBEDDINGS_FILE, embed_catalogue
    from serendip.labels import label_agreement, read_item_labels

    cfg = cfg or ClusterConfig()
    embedding = embedding or EmbeddingConfig()
    out = Path(out_dir or data_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = read_table(data_dir, "items")
    interactions = (read_table(data_dir, "interactions")
                    if embedding.w_behaviour > 0 and has_table(data_dir, "interactions") else None)
    if not use_cache:
        (out / EMBEDDINGS_FILE).unlink(missing_ok=True)
    emb, embedder = embed_catalogue(items, embedding, base_dir=data_dir, cache_dir=out,
                                    interactions=interactions)
    labels = read_item_labels(data_dir)
    tree = build_cluster_tree(items, emb, cfg, labels=labels)   # labels may name clusters
    tree.stats["embedding"] = {"config": asdict(embedding), "encoder": embedder.encoder,
                               "dim": int(emb.shape[1]), "blocks": embedder.block_report()}
    if labels is not None:
        tree.stats["labels"] = label_agreement(tree.item_clusters, labels)
    tree.save(out / TREE_DIR)
    embedder.save(out / TREE_DIR / EMBEDDER_SUBDIR)
    write_table(out, "clusters", tree.clusters)
    write_table(out, "item_clusters", tree.item_clusters, refs={"items": items})
    return tree


def assign_new_items(tree_dir: str | os.PathLike, items: pa.Table,
                     base_dir: str | os.PathLike | None = None) -> pa.Table:
    """item_clusters rows for ``items`` (e.g. new uploads before batch scoring): embed them
    with the embedder saved beside the tree (same statistics as the catalogue it was built
    on), then place them with :func:`assign_items`. ``tree_dir`` is the ``cluster_tree/``
    folder or the work directory holding it."""
    from serendip.embeddings import Embedder

    d = Path(tree_dir)
    if not (d / TREE_JSON).exists() and (d / TREE_DIR / TREE_JSON).exists():
        d = d / TREE_DIR
    tree = ClusterTree.load(d)
    embedder = Embedder.load(d / EMBEDDER_SUBDIR)
    return assign_items(tree, items.column("item_id"), embedder.transform(items, base_dir))
