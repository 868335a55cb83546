"""How the blocks combine: every block is L2-normalised per row, centred and divided by its root
mean squared norm over the catalogue (total variance 1 whatever its dimension), multiplied by
its weight ``w_<block>``; the blocks are concatenated and L2-normalised. A block's share of the
squared distance between two random items is about ``w² / Σ w²``."""

from __future__ import annotations

import numpy as np

from serendip.embeddings.config import BLOCKS, EmbeddingConfig
from serendip.errors import ConfigError


def row_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64; an all-zero row stays zero)."""
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def block_stats(x: np.ndarray) -> tuple[np.ndarray, float]:
    """A block's centre and scale over the catalogue: the mean of its row-normalised rows
    (all-zero rows, items without data, left out) and their root mean squared distance to it
    (1.0 when that is ~0); a block with no columns gets ``(zeros(0), 1.0)``."""
    if x.shape[1] == 0:
        return np.zeros(0), 1.0
    xn = row_normalise(x)[np.any(x != 0, axis=1)]       # all-zero rows: no data
    if len(xn) == 0:
        xn = np.zeros((1, x.shape[1]))
    mean = xn.mean(axis=0)
    total = float(np.sqrt(((xn - mean) ** 2).sum(axis=1).mean()))
    return mean, (total if total > 1e-9 else 1.0)


def scale_block(x: np.ndarray, mean: np.ndarray, scale: float) -> np.ndarray:
    """Row-normalised, centred, unit total variance; an all-zero row (no data for this
    item, e.g. a cold item's behaviour) sits at the centre: the block is silent for it."""
    out = (row_normalise(x) - mean) / scale
    out[~np.any(x != 0, axis=1)] = 0.0
    return out


def combine_blocks(blocks: dict[str, np.ndarray], cfg: EmbeddingConfig,
                   means: dict[str, np.ndarray], scales: dict[str, float]) -> np.ndarray:
    """Blocks → the final embedding (n × dim, float32, rows L2-normalised): each block in use
    (weight > 0, columns, fitted) scaled (:func:`scale_block`), times its weight, concatenated.

    Raises:
        ConfigError: every block is empty or weighted 0.
    """
    parts = []
    for name in BLOCKS:
        x = blocks.get(name)
        w = getattr(cfg, f"w_{name}")
        if x is None or w <= 0 or x.shape[1] == 0 or not len(means.get(name, ())):
            continue
        parts.append(w * scale_block(x, means[name], scales[name]))
    if not parts:
        raise ConfigError("every feature block is empty or weighted 0", field="w_text",
                          fix="give a block with data (titles with words, thumbnails, "
                              "interactions) a weight > 0")
    emb = np.concatenate(parts, axis=1)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return (emb / np.maximum(norms, 1e-9)).astype(np.float32)


def block_report(cfg: EmbeddingConfig, means: dict[str, np.ndarray],
                 warm_items: int | None = None) -> dict[str, dict]:
    """Per block: weight, dimension and the share of squared distance it carries
    (``w² / Σ w²`` over the blocks in use); blocks not in use are listed with dim 0;
    ``warm_items`` (items with their own behaviour vector) is added to the behaviour block."""
    used = {n: getattr(cfg, f"w_{n}") for n in BLOCKS
            if getattr(cfg, f"w_{n}") > 0 and len(means.get(n, ()))}
    total = sum(w * w for w in used.values()) or 1.0
    out = {}
    for n in BLOCKS:
        dim = len(means.get(n, ())) if n in used else 0
        out[n] = {"weight": float(getattr(cfg, f"w_{n}")), "dim": int(dim),
                  "share": round(used[n] ** 2 / total, 3) if n in used else 0.0}
    if warm_items is not None:
        out["behaviour"]["warm_items"] = int(warm_items)
    return out
