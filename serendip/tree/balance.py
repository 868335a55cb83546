"""How balanced a built tree is: per level, max/min sibling traffic and, where the bound is not
met, why (a dominant item, or items too coarse to close the gap)."""

from __future__ import annotations

import numpy as np

from serendip.tree.config import LEVELS


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
