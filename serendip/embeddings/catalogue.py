"""The catalogue's embeddings: :func:`embed_catalogue` fits the :class:`Embedder` and caches
``embeddings.parquet`` (item_id, embedding) + ``embedder/`` in the work directory, keyed by a
hash of the config, the item ids/titles/thumbnails and the interactions; small results are also
kept in this process (``_MEMO``)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from serendip.embeddings.config import EmbeddingConfig
from serendip.embeddings.embedder import Embedder, fit_embedder
from serendip.embeddings.text import _resolve_text_encoder
from serendip.errors import ConfigError

EMBEDDINGS_FILE = "embeddings.parquet"
EMBEDDER_DIR = "embedder"
_CACHE_KEY = b"serendip.embedding_key"
_MEMO: dict[str, tuple] = {}       # recent small results, keyed like the on-disk cache
_MEMO_MAX_FLOATS = 4_000_000


def _cache_key(items: pa.Table, cfg: EmbeddingConfig,
               interactions: pa.Table | None = None) -> str:
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    h.update(_resolve_text_encoder(cfg).encode())
    tables = [(items, ("item_id", "title", "thumbnail"))]
    if interactions is not None and cfg.w_behaviour > 0:
        h.update(b"interactions")
        tables.append((interactions, ("user_id", "context_item_id", "next_item_id")))
    for table, cols in tables:
        for col in cols:
            if col in table.column_names:
                for chunk in table.column(col).chunks:
                    for buf in chunk.buffers():
                        if buf is not None:
                            h.update(memoryview(buf))
    return h.hexdigest()


def embed_catalogue(items: pa.Table, cfg: EmbeddingConfig | None = None,
                    base_dir: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None,
                    interactions: pa.Table | None = None) -> tuple[np.ndarray, Embedder]:
    """Catalogue embeddings (n × dim, float32, rows L2-normalised) and the fitted
    :class:`Embedder`; ``interactions`` feed the behaviour block.

    With ``cache_dir``: ``embeddings.parquet`` + ``embedder/`` there are reused when their key
    (config + item ids/titles/thumbnails + interactions) matches, and rewritten otherwise;
    image features are cached there by content hash (``image_features.parquet``).

    Raises:
        ConfigError: see :func:`fit_embedder`.
    """
    cfg = cfg or EmbeddingConfig()
    cfg.check()
    if items.num_rows == 0:
        raise ConfigError("no items to embed", field="items", fix="pass a non-empty items table")
    key = _cache_key(items, cfg, interactions)
    path = Path(cache_dir) / EMBEDDINGS_FILE if cache_dir else None
    edir = Path(cache_dir) / EMBEDDER_DIR if cache_dir else None
    if path is not None and path.exists() and (edir / "embedder.json").exists():
        cached = load_embeddings(path, expected_key=key)
        if cached is not None:
            return cached, Embedder.load(edir)
    if key in _MEMO:
        emb, embedder = _MEMO[key]
        emb = emb.copy()
    else:
        embedder, emb = fit_embedder(items, cfg, base_dir, interactions, cache_dir)
        if emb.size <= _MEMO_MAX_FLOATS:      # small catalogues: reuse within the process
            while len(_MEMO) >= 4:
                _MEMO.pop(next(iter(_MEMO)))
            _MEMO[key] = (emb.copy(), embedder)
    if path is not None:
        embedder.save(edir)
        save_embeddings(path, items.column("item_id"), emb, key)
    return emb, embedder


def item_embeddings(items: pa.Table, cfg: EmbeddingConfig | None = None,
                    base_dir: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None,
                    interactions: pa.Table | None = None) -> np.ndarray:
    """Clustering embeddings (n × d, float32, L2-normalised), one row per item in ``items``
    (see :func:`embed_catalogue` for the cache and ``interactions``)."""
    return embed_catalogue(items, cfg, base_dir, cache_dir, interactions)[0]


def save_embeddings(path: str | os.PathLike, item_ids, emb: np.ndarray, key: str = "") -> None:
    from serendip.data.io import atomic_write_parquet

    d = emb.shape[1]
    flat = pa.array(np.ascontiguousarray(emb, np.float32).ravel(), pa.float32())
    table = pa.table({"item_id": pa.array(item_ids, pa.string()),
                      "embedding": pa.FixedSizeListArray.from_arrays(flat, d).cast(
                          pa.list_(pa.float32()))})
    table = table.replace_schema_metadata({_CACHE_KEY: key.encode()})
    atomic_write_parquet(table, path)


def load_embeddings(path: str | os.PathLike, expected_key: str | None = None
                    ) -> np.ndarray | None:
    """Embeddings from ``embeddings.parquet``; None when the cache key does not match."""
    table = pq.read_table(path)
    if expected_key is not None:
        meta = table.schema.metadata or {}
        if meta.get(_CACHE_KEY, b"").decode() != expected_key:
            return None
    col = table.column("embedding").combine_chunks()
    n = len(col)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    values = col.flatten().to_numpy(zero_copy_only=False)
    return values.reshape(n, -1).astype(np.float32, copy=False)
