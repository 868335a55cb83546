"""The entry: a unique, short, grounded description for every cluster of the tree (paper §2: "a
unique natural language description to encapsulate its topical focus"; steps 3-5 of
:mod:`serendip.descriptions`)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from serendip.descriptions.ranking import _own_terms, term_counts
from serendip.descriptions.tokens import (
    TITLE_FILLER,
    _base_stopwords,
    _labels_text,
    is_term,
    stopwords,
    tokenize,
)
from serendip.descriptions.unique import _borrow, _compose, _last_resort, _reorder

LEVELS = 4


def describe_clusters(titles: list[str | None], nodes: np.ndarray, ids: list[list[str]],
                      cfg, labels: list | None = None) -> dict[str, str]:
    """A unique, short, grounded description for every cluster id (module docstring).

    Args:
        titles: n item titles.
        nodes: (n × 4) int; ``nodes[i, l]`` is the index into ``ids[l]`` of item i's
            level-(l+1) cluster.
        ids: per level, the cluster ids (path style, ``"3.1.0"``).
        cfg: a :class:`~serendip.tree.ClusterConfig` (``description_*`` fields,
            ``extra_stopwords``).
        labels: optional n label lists (e.g. genres) that may also name a cluster.

    Returns:
        cluster id → description (unique over the tree; words separated by single spaces).
    """
    stop = stopwords(tuple(cfg.extra_stopwords))
    min_share = float(getattr(cfg, "description_min_share", 0.1))
    level_counts, all_terms = term_counts(titles, nodes, ids, stop, labels=labels)
    sizes = {}
    for lvl in range(len(ids)):
        cnt = np.bincount(nodes[:, lvl], minlength=len(ids[lvl]))
        sizes.update({cid: int(c) for cid, c in zip(ids[lvl], cnt)})
    descriptions: dict[str, str] = {}
    used: set[str] = set()
    lenient = stop - (TITLE_FILLER - _base_stopwords(with_filler=False))   # filler, not stop words
    label_words = {t for text in set(_labels_text(labels)) for t in tokenize(text)} \
        if labels is not None else set()
    heads: dict[str, str] = {}

    member_index: dict[int, tuple[dict[str, int], np.ndarray, np.ndarray]] = {}

    def _filler_words(cid: str, lvl: int, need: int = 1, cap: int = 2000) -> list[str]:
        """Title filler of the cluster's members ("compilation") found in >= need of them
        (counted over at most ``cap`` members)."""
        if lvl not in member_index:
            order = np.argsort(nodes[:, lvl], kind="stable")
            bounds = np.searchsorted(nodes[order, lvl], np.arange(len(ids[lvl]) + 1))
            member_index[lvl] = ({c: j for j, c in enumerate(ids[lvl])}, order, bounds)
        pos, order, bounds = member_index[lvl]
        j = pos[cid]
        members = order[bounds[j]:bounds[j + 1]]
        scale = min(1.0, cap / max(len(members), 1))
        words = Counter(w for i in members[:cap] for w in set(tokenize(titles[i]))
                        if is_term(w, lenient))
        return [w for w, k in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))
                if k >= need * scale]

    for lvl in range(len(ids)):
        counts = level_counts[lvl]
        children: dict[str, list[Counter]] = {}
        if lvl + 1 < len(ids):
            for cid, cnt in level_counts[lvl + 1].items():
                children.setdefault(cid.rsplit(".", 1)[0], []).append(cnt)
        by_parent: dict[str, list[str]] = {}
        for cid in ids[lvl]:
            by_parent.setdefault(cid.rsplit(".", 1)[0] if lvl else "", []).append(cid)
        ranked: dict[str, list[str]] = {}
        for sibs in by_parent.values():
            ptot = Counter()
            for s in sibs:
                ptot.update(counts[s])
            ranked.update(_own_terms(counts, sibs, ptot if lvl else all_terms, children, sizes,
                                     min_share, cfg.description_min_lift))
        options: dict[str, list[list[str]]] = {}
        need_of: dict[str, int] = {}
        loose: dict[str, list[str]] = {}
        borrowed: dict[str, list[str]] = {}
        state: dict[str, list[str]] = {}
        for cid in ids[lvl]:
            need = need_of[cid] = max(1, math.ceil(min_share * sizes[cid] - 1e-9))
            c = counts[cid]
            pid = cid.rsplit(".", 1)[0] if lvl else ""
            parent = descriptions.get(pid, "")
            # a term the parent already says stays: c-TF-IDF among siblings and the lift
            # filter keep words all siblings share out; a parent named after this child's
            # topic ("crème brûlée") leaves the child its topic plus a distinguishing term
            own = ranked[cid]
            grounded_parent = [w for w in parent.split() if c[w] >= need]
            others = sorted((t for t, k in c.items() if k >= need and " " not in t),
                            key=lambda t: (-c[t], t))
            ancestors = []
            a = cid
            while "." in a:
                a = a.rsplit(".", 1)[0]
                ancestors += descriptions[a].split()
            start = own[:1] or grounded_parent[:1] or others[:1]
            heads[cid] = " ".join(start)
            # from description_parent_level on: the parent's own head term, where grounded here
            prefix = [w for w in heads.get(pid, "").split() if c[w] >= need] \
                if lvl + 1 >= cfg.description_parent_level else []
            state[cid] = prefix + start
            # what a clash may add, best first: the next distinguishing terms (up to
            # description_words own terms), the parent's grounded words, further own terms,
            # any other grounded term
            k = max(1, int(cfg.description_words))
            options[cid] = [[t] for t in own[1:k]] + [[w] for w in grounded_parent] + \
                [[t] for t in own[k:]] + [[t] for t in others]
            # spent clusters: a label word of some member first (the issue's "or in the item
            # labels"), then a title word fewer members use
            loose[cid] = sorted((t for t in c if " " not in t),
                                key=lambda t: (t not in label_words, -c[t], t))
            borrowed[cid] = ancestors
        for _ in range(64):
            current = {cid: _compose(state[cid], []) for cid in ids[lvl]}
            groups: dict[str, list[str]] = {}
            for cid, t in current.items():
                groups.setdefault(t, []).append(cid)
            clash = []
            for t, g in groups.items():
                if t in used or not t:
                    clash += g
                elif len(g) > 1:   # the largest keeps the name, the others add a term
                    clash += sorted(g, key=lambda x: (-sizes[x], x))[1:]
            if not clash:
                break
            progressed = False
            for cid in clash:
                have = set(current[cid].split())
                while options[cid]:
                    nxt = options[cid].pop(0)
                    if not set(" ".join(nxt).split()) <= have:
                        state[cid] = state[cid] + nxt
                        progressed = True
                        break
            if not progressed:
                break
        taken = Counter(_compose(state[cid], []) for cid in ids[lvl])
        for cid in sorted(ids[lvl], key=lambda x: (-sizes[x], x)):
            t = _compose(state[cid], [])
            if t in used or not t or taken[t] > 1:
                # no grounded term tells it apart: another order of its own words, then a word
                # found in fewer of its members, its title filler, a word of its ancestors,
                # and only then its path
                taken[t] -= 1
                avoid = used | {k for k, v in taken.items() if v > 0}
                t = _reorder(t, avoid) or _borrow(t, _filler_words(cid, lvl, need_of[cid]),
                                                  avoid) \
                    or _borrow(t, loose[cid], avoid) or _borrow(t, _filler_words(cid, lvl), avoid) \
                    or _borrow(t, borrowed[cid], avoid) or _last_resort(cid, t, avoid)
            descriptions[cid] = t
            used.add(t)
    return descriptions
