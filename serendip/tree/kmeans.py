"""Balanced k-means for one node: faiss k-means from k-means++ seeds, then a traffic-balanced
assignment (nearest centroid or an entropic OT plan, each followed by the greedy repair of
:mod:`serendip.tree.repair`), centroids recomputed from the members."""

from __future__ import annotations

import numpy as np

from serendip.errors import ConfigError
from serendip.tree.config import ClusterConfig
from serendip.tree.repair import balance_assignment


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


def sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
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
        cost = sq_dists(x, centroids)
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
