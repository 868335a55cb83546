"""Users and how they behave: 1-3 interest leaves with a hidden affinity for each interest's
bridge, the satisfaction a next item gives (the ground truth evaluation reuses), and the
logged policy that picks the next leaf from the context item."""

from __future__ import annotations

import numpy as np

from serendip.data.synth.config import SatisfactionModel, SynthConfig
from serendip.data.synth.taxonomy import Taxonomy


def make_users(tax: Taxonomy, cfg: SynthConfig, rng) -> tuple[np.ndarray, np.ndarray]:
    """Interests (users × 3 leaf ids, -1 = none) and affinity flags (users × 3)."""
    u = cfg.users
    k = rng.integers(1, 4, size=u)
    interests = rng.integers(0, tax.n_leaves, size=(u, 3))
    interests[np.arange(3)[None, :] >= k[:, None]] = -1
    affinity = (rng.random((u, 3)) < cfg.affinity_prob) & (interests >= 0)
    return interests, affinity


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
