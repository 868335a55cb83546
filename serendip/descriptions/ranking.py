"""Term counts per cluster (titles and labels, phrases of sticky adjacent terms) and the
c-TF-IDF ranking of grounded terms among siblings (paper §2 descriptions, step 3 of
:mod:`serendip.descriptions`; BERTopic's class-based TF-IDF)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from serendip.descriptions.tokens import _labels_text, _token_stream, _unique_pairs, is_term


def term_counts(titles: list[str | None], nodes: np.ndarray, ids: list[list[str]],
                stop: frozenset[str], labels: list | None = None, min_phrase_count: int = 3,
                stickiness: float = 0.6) -> tuple[list[dict[str, Counter]], Counter]:
    """Per level, per cluster: in how many member items each term occurs (titles and labels
    together, each item counted once per term), and the same over the catalogue. Vectorised
    with Arrow and scipy: a million titles take seconds.

    Args:
        titles: n item titles (None = empty).
        nodes: (n × 4) int, ``nodes[i, l]`` = index into ``ids[l]`` of item i's cluster.
        ids: per level, the cluster ids.
        stop: words that are never terms (see :func:`stopwords`).
        labels: optional n label lists (or strings), e.g. genres.
    """
    import scipy.sparse as sp

    n = len(titles)
    texts = list(titles)
    if labels is not None:
        texts = texts + _labels_text(labels)
    item_of, vocab, tid, joinable = _token_stream(texts)
    v = len(vocab)
    term = np.array([is_term(w, stop) for w in vocab], bool)
    # phrases: adjacent terms within a title (not across a title and its labels)
    same = (item_of[1:] == item_of[:-1]) & joinable[:-1] if len(tid) > 1 else np.zeros(0, bool)
    a, b = tid[:-1][same], tid[1:][same]
    ok = term[a] & term[b] & (a != b)
    codes = a[ok] * v + b[ok]
    doc = item_of[:-1][same][ok] % n
    # count each phrase once per item
    pair = _unique_pairs(doc, codes)
    uniq, inv, cnt = np.unique(pair[1], return_inverse=True, return_counts=True)
    ua, ub = uniq // v, uniq % v
    item_tok = _unique_pairs(item_of % n, tid)
    df = np.bincount(item_tok[1], minlength=v)
    sticky = (cnt >= min_phrase_count) & (cnt >= stickiness * np.minimum(df[ua], df[ub]))
    phrase_of_code = np.full(len(uniq), -1)
    phrase_of_code[sticky] = np.arange(int(sticky.sum()))
    phrase_names = [f"{vocab[x]} {vocab[y]}" for x, y in zip(ua[sticky], ub[sticky])]
    keep = term[item_tok[1]]
    ph = phrase_of_code[inv] if len(uniq) else np.zeros(0, np.int64)
    rows = np.concatenate([item_tok[0][keep], pair[0][ph >= 0]])
    cols = np.concatenate([item_tok[1][keep], v + ph[ph >= 0]])
    names = vocab + phrase_names
    x = sp.csr_matrix((np.ones(len(rows), np.int64), (rows, cols)), shape=(n, len(names)))
    x.sum_duplicates()
    x.data[:] = 1
    total = np.asarray(x.sum(axis=0)).ravel()
    all_terms = Counter({names[j]: int(total[j]) for j in np.flatnonzero(total)})
    level_counts: list[dict[str, Counter]] = []
    for lvl in range(len(ids)):
        m = sp.csr_matrix((np.ones(n, np.int64), (nodes[:, lvl], np.arange(n))),
                          shape=(len(ids[lvl]), n))
        per = (m @ x).tocsr()
        counts: dict[str, Counter] = {}
        for i, cid in enumerate(ids[lvl]):
            lo, hi = per.indptr[i], per.indptr[i + 1]
            counts[cid] = Counter({names[j]: int(c) for j, c in
                                   zip(per.indices[lo:hi], per.data[lo:hi]) if c})
        level_counts.append(counts)
    return level_counts, all_terms


def _own_terms(counts: dict[str, Counter], siblings: list[str], parent_total: Counter,
               children: dict[str, list[Counter]], sizes: dict[str, int], min_share: float,
               min_lift: float) -> dict[str, list[str]]:
    """Per sibling: its grounded terms ranked by c-TF-IDF among the siblings (see the module
    docstring), each word used once (a word is replaced by the phrase that nearly always
    surrounds it)."""
    tokens = {s: sum(counts[s].values()) for s in siblings}
    avg = max(1.0, sum(tokens.values()) / max(len(siblings), 1))
    ptot = max(1, sum(parent_total.values()))
    freq: Counter = Counter()
    for s in siblings:
        freq.update(counts[s])
    out: dict[str, list[str]] = {}
    for s in siblings:
        c, tot = counts[s], max(tokens[s], 1)
        need = max(1, math.ceil(min_share * sizes[s] - 1e-9))
        kids = [(k, max(1, sum(k.values()))) for k in children.get(s, [])]
        scored = []
        for term, cnt in c.items():
            if cnt < need:
                continue
            tf = cnt / tot
            lift = tf / (parent_total[term] / ptot) if parent_total[term] else 1.0
            if lift < min_lift and len(siblings) > 1:
                continue
            score = tf * math.log(1.0 + avg / freq[term])
            if kids:
                score *= (1 + sum(k[term] / kt >= 0.3 * tf for k, kt in kids)) / (1 + len(kids))
            scored.append((score, term))
        scored.sort(key=lambda t: (-t[0], -len(t[1]), t[1]))
        chosen: list[str] = []
        used: set[str] = set()
        for _, term in scored[:60]:
            if " " not in term:   # prefer the phrase that (nearly) always surrounds this word
                phrases = [(cc, p) for p, cc in c.items() if " " in p and term in p.split()
                           and cc >= 0.6 * c[term] and cc >= need]
                if phrases:
                    term = max(phrases)[1]
            words = set(term.split())
            if words <= used:
                continue
            used |= words
            chosen.append(term)
        out[s] = chosen
    return out
