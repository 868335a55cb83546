"""Greedy repair of a hard assignment so that sibling traffic is within the bound (max/min <=
``balance_tol``) wherever single items allow it, every child keeping ``min_count`` items."""

from __future__ import annotations

import numpy as np


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
