"""The ``behaviour`` (co-engagement) block: the TF-IDF weighted item × user engagement matrix
(or item × item transitions) factorised by scikit-learn ``TruncatedSVD`` for the warm items."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from serendip.embeddings.config import EmbeddingConfig


def engagement_counts(items: pa.Table, interactions: pa.Table | None) -> np.ndarray:
    """How many interactions each catalogue item takes part in (as context or next item)."""
    n = items.num_rows
    if interactions is None or interactions.num_rows == 0:
        return np.zeros(n, np.int64)
    index = {iid: i for i, iid in enumerate(items.column("item_id").to_pylist())}
    out = np.zeros(n, np.int64)
    for col in ("context_item_id", "next_item_id"):
        pos = np.fromiter((index.get(i, -1) for i in interactions.column(col).to_pylist()),
                          np.int64, interactions.num_rows)
        out += np.bincount(pos[pos >= 0], minlength=n)
    return out


def behaviour_features(items: pa.Table, interactions: pa.Table | None, cfg: EmbeddingConfig
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Co-engagement vectors of the catalogue's warm items.

    Returns ``(x, warm)``: ``x`` (n × d, float32, rows L2-normalised, zeros for cold items) and
    ``warm`` (n, bool): items with at least ``cfg.behaviour_min_count`` engagements. ``d`` is
    ``cfg.behaviour_dim`` (fewer when the matrix is smaller); ``d = 0`` when fewer than
    ``d + 2`` items are warm (too little to factorise): the block is then skipped.
    Method: see the module docstring (TF-IDF weighted engagement matrix, TruncatedSVD).
    """
    import scipy.sparse as sp
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfTransformer

    n = items.num_rows
    counts = engagement_counts(items, interactions)
    warm = counts >= cfg.behaviour_min_count
    if warm.sum() < cfg.behaviour_dim + 2:
        return np.zeros((n, 0), np.float32), np.zeros(n, bool)
    index = {iid: i for i, iid in enumerate(items.column("item_id").to_pylist())}
    ctx = np.fromiter((index.get(i, -1) for i in interactions.column("context_item_id")
                       .to_pylist()), np.int64, interactions.num_rows)
    nxt = np.fromiter((index.get(i, -1) for i in interactions.column("next_item_id")
                       .to_pylist()), np.int64, interactions.num_rows)
    ok = (ctx >= 0) & (nxt >= 0)
    ctx, nxt = ctx[ok], nxt[ok]
    if cfg.behaviour_matrix == "users":
        users = interactions.column("user_id").filter(pa.array(ok)).to_pylist()
        ucode = {u: k for k, u in enumerate(dict.fromkeys(users))}
        u = np.fromiter((ucode[x] for x in users), np.int64, len(users))
        rows, cols = np.concatenate([ctx, nxt]), np.concatenate([u, u])
        m = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, len(ucode))).tocsr()
        m.data[:] = 1.0                       # engaged or not (duplicates summed, then 1)
    else:
        rows, cols = np.concatenate([ctx, nxt]), np.concatenate([nxt, ctx])
        m = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    m = m[np.nonzero(warm)[0]]
    x = TfidfTransformer(sublinear_tf=True).fit_transform(m)
    dim = int(min(cfg.behaviour_dim, x.shape[1] - 1, x.shape[0] - 1))
    if dim < 2:
        return np.zeros((n, 0), np.float32), np.zeros(n, bool)
    z = TruncatedSVD(n_components=dim, random_state=cfg.seed).fit_transform(x)
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-9)
    out = np.zeros((n, dim), np.float32)
    out[warm] = z
    return out, warm
