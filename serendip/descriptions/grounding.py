"""How far the descriptions can be trusted: the share of clusters whose every word occurs in
enough of their members' titles or labels (issue 14's rules; ``tree.stats["descriptions"]``)."""

from __future__ import annotations

import re

import numpy as np

from serendip.descriptions.tokens import _ROMAN, _labels_text, _token_stream, _unique_pairs


def grounding_report(descriptions: dict[str, str], titles: list[str | None], nodes: np.ndarray,
                     ids: list[list[str]], labels: list | None = None,
                     min_share: float = 0.1) -> dict:
    """How far the descriptions can be trusted, per the issue-14 rules.

    Returns:
        ``{"clusters", "grounded_share"`` (every word in >= ``min_share`` of the members'
        titles or labels), ``"grounded_or_in_labels_share"`` (every word in >= ``min_share``
        of them, or in some member's labels: issue 14's reading), ``"in_members_share"``
        (every word in at least one member),
        ``"ends_in_number"``, ``"ungrounded"`` (up to 20 cluster ids), ``"min_share"}``.
    """
    import scipy.sparse as sp

    n = len(titles)
    texts = list(titles) + (_labels_text(labels) if labels is not None else [])
    item_of, vocab, tid, _ = _token_stream(texts)
    pairs = _unique_pairs(item_of % max(n, 1), tid)
    x = sp.csr_matrix((np.ones(pairs.shape[1], np.int64), (pairs[0], pairs[1])),
                      shape=(n, len(vocab)))
    x.data[:] = 1
    col = {w: j for j, w in enumerate(vocab)}
    lab_x = None
    if labels is not None:       # the labels' own tokens, for the "or in the labels" reading
        lab_pairs = _unique_pairs(item_of[item_of >= n] - n, tid[item_of >= n])
        lab_x = sp.csr_matrix((np.ones(lab_pairs.shape[1], np.int64),
                               (lab_pairs[0], lab_pairs[1])), shape=(n, len(vocab)))
    grounded = in_members = ends = title_or_label = 0
    bad: list[str] = []
    for lvl in range(len(ids)):
        m = sp.csr_matrix((np.ones(n, np.int64), (nodes[:, lvl], np.arange(n))),
                          shape=(len(ids[lvl]), n))
        per = (m @ x).tocsr()
        lab_per = (m @ lab_x).tocsr() if lab_x is not None else None
        size = np.bincount(nodes[:, lvl], minlength=len(ids[lvl]))
        for i, cid in enumerate(ids[lvl]):
            if cid not in descriptions:
                continue
            words = descriptions[cid].split()
            if not words or not size[i]:
                bad.append(cid)
                continue
            share = [per[i, col[w]] / size[i] if w in col else 0.0 for w in words]
            if all(sh >= min_share - 1e-9 for sh in share):
                grounded += 1
            else:
                bad.append(cid)
            if lab_x is not None:
                lab_hit = [w in col and lab_per[i, col[w]] > 0 for w in words]
                title_or_label += all(sh >= min_share - 1e-9 or hit
                                      for sh, hit in zip(share, lab_hit))
            in_members += all(sh > 0 for sh in share)
            ends += bool(re.search(r"\d$", words[-1]) or _ROMAN.match(words[-1]))
    k = max(len(descriptions), 1)
    if lab_x is None:
        title_or_label = grounded
    return {"clusters": len(descriptions), "grounded_share": round(grounded / k, 4),
            "grounded_or_in_labels_share": round(title_or_label / k, 4),
            "in_members_share": round(in_members / k, 4), "ends_in_number": ends,
            "ungrounded": bad[:20], "min_share": min_share}
