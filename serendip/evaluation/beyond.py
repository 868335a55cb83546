"""Beyond-accuracy metrics, named and defined as in Microsoft Recommenders'
``python_evaluation`` (catalog_coverage, novelty, diversity, serendipity), plus the paper's
cluster-based serendipity and novel-impression ratio.

Inputs are plain Python/numpy: ``recs`` is a list of recommendation lists (item ids) and
``emb`` maps item id → L2-normalised embedding, so every metric is testable by hand.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np


def catalog_coverage(recs: Sequence[Sequence[str]], catalog_size: int) -> float:
    """Distinct recommended items / catalogue size."""
    if catalog_size <= 0:
        return 0.0
    return len({i for r in recs for i in r}) / catalog_size


def historical_item_novelty(interacting_users: Mapping[str, int], n_users: int) -> dict[str, float]:
    """-log2(share of users who interacted with the item): rare items are novel."""
    return {i: -math.log2(max(c, 1) / n_users) for i, c in interacting_users.items()}


def novelty(recs: Sequence[Sequence[str]], item_novelty: Mapping[str, float]) -> float:
    """Mean historical novelty of recommended items (unseen items get the maximum)."""
    cap = max(item_novelty.values()) if item_novelty else 0.0
    vals = [item_novelty.get(i, cap) for r in recs for i in r]
    return float(np.mean(vals)) if vals else 0.0


def _sim(a: Sequence[str], b: Sequence[str], emb: Mapping[str, np.ndarray]) -> np.ndarray:
    A = np.stack([emb[i] for i in a])
    B = np.stack([emb[i] for i in b])
    return A @ B.T


def intra_list_diversity(recs: Sequence[Sequence[str]], emb: Mapping[str, np.ndarray]) -> float:
    """1 − mean pairwise cosine similarity within each list, averaged over lists."""
    vals = []
    for r in recs:
        if len(r) < 2:
            continue
        s = _sim(r, r, emb)
        n = len(r)
        vals.append(1.0 - (s.sum() - np.trace(s)) / (n * (n - 1)))
    return float(np.mean(vals)) if vals else 0.0


def serendipity(recs: Sequence[Sequence[str]], histories: Sequence[Sequence[str]],
                relevance: Sequence[Sequence[float]], emb: Mapping[str, np.ndarray]) -> float:
    """Relevant *and* unexpected: mean over items of (1 − mean cosine similarity to the user's
    history) × relevance (Kotkov; ``user_serendipity`` in Microsoft Recommenders)."""
    vals = []
    for r, h, rel in zip(recs, histories, relevance):
        if not r or not h:
            continue
        unexpected = 1.0 - _sim(r, h, emb).mean(axis=1)
        vals.extend((unexpected * np.asarray(rel, dtype=float)).tolist())
    return float(np.mean(vals)) if vals else 0.0


def cluster_serendipity(recs: Sequence[Sequence[str]], contexts: Sequence[str],
                        cluster_at: Mapping[str, Sequence[str]], level: int, delta: int) -> float:
    """The paper's definition: share of recommended items in a different level-``level`` cluster
    from the context item but the same level-``level-delta`` cluster.

    ``cluster_at[item]`` is the item's path (c1, c2, c3, c4)."""
    hits = total = 0
    for r, c in zip(recs, contexts):
        cc = cluster_at[c]
        for i in r:
            ic = cluster_at[i]
            total += 1
            hits += ic[level - 1] != cc[level - 1] and ic[level - delta - 1] == cc[level - delta - 1]
    return hits / total if total else 0.0


def novel_impression_ratio(recs_by_model: Mapping[str, Sequence[Sequence[str]]]) -> dict[str, float]:
    """Per model: share of its impressions that no other model recommended for the same
    request (paper §4.2). Lists are aligned by request across models."""
    models = list(recs_by_model)
    n_req = len(next(iter(recs_by_model.values()))) if models else 0
    out = dict.fromkeys(models, 0.0)
    counts = Counter()
    totals = Counter()
    for q in range(n_req):
        sets = {m: set(recs_by_model[m][q]) for m in models}
        for m in models:
            others = set().union(*(sets[o] for o in models if o != m)) if len(models) > 1 else set()
            counts[m] += len(sets[m] - others)
            totals[m] += len(sets[m])
    for m in models:
        out[m] = counts[m] / totals[m] if totals[m] else 0.0
    return out
