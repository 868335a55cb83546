"""The synthetic catalogue: items spread over the leaves with Zipf popularity (stratified so
every topic carries the same traffic), titles that carry the topic only partly, and drawn media
(:mod:`serendip.data.media`) that carry it fully, the bridge's texture as a motif."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from serendip.data import media
from serendip.data.schemas import SCHEMAS
from serendip.data.synth.config import EPOCH_US, SynthConfig
from serendip.data.synth.taxonomy import Taxonomy
from serendip.data.taxonomy_names import FILLER


def _titles(tax: Taxonomy, leaf: np.ndarray, cfg: SynthConfig, rng) -> list[str]:
    words_by_level = []
    n = len(leaf)
    for i in range(n):
        names = tax.names(int(leaf[i]))
        words: list[str] = []
        for lvl in range(4):
            if rng.random() < cfg.title_p[lvl]:
                words.append(names[lvl])
        if rng.random() < cfg.title_p_misleading:
            other = tax.names(int(rng.integers(tax.n_leaves)))
            words.append(other[int(rng.integers(1, 4))])
        k = int(rng.integers(1, 4))
        words += [FILLER[j] for j in rng.integers(len(FILLER), size=k)]
        order = rng.permutation(len(words))
        words_by_level.append(" ".join(words[j] for j in order))
    return words_by_level


def make_items(tax: Taxonomy, cfg: SynthConfig, rng: np.random.Generator
               ) -> tuple[pa.Table, np.ndarray]:
    n = cfg.items
    ranks = np.arange(1, n + 1)
    impressions = np.floor(2_000_000 / ranks ** cfg.zipf_s).astype(np.int64) + 10
    # Stratify: popularity rank r goes to leaf perm_round[r % n_leaves] so every topic gets
    # the same share of traffic at every level (the tree is then recoverable).
    n_leaves = tax.n_leaves
    rounds = -(-n // n_leaves)
    leaf_by_rank = np.concatenate([rng.permutation(n_leaves) for _ in range(rounds)])[:n]
    order = rng.permutation(n)              # item ids do not reveal popularity
    leaf = np.empty(n, dtype=np.int64)
    imps = np.empty(n, dtype=np.int64)
    leaf[order] = leaf_by_rank
    imps[order] = impressions
    item_ids = [f"v{i:07d}" for i in range(n)]
    seeds = rng.integers(0, 2**31 - 1, size=n)
    thumbs, frames = [], []
    for i in range(n):
        shape, hue, tex, lay = tax.visual(int(leaf[i]))
        motif = int(tax.bridge_l3[leaf[i]])  # the bridge sibling's texture index
        v = media.Visual(shape, hue, tex, lay, motif, int(seeds[i]))
        thumbs.append(media.thumbnail_uri(v))
        frames.append(media.frame_uris(v))
    created = EPOCH_US - rng.integers(0, 90 * 86400 * 10**6, size=n)
    table = pa.table({
        "item_id": item_ids,
        "title": _titles(tax, leaf, cfg, rng),
        "created_at": pa.array(created, pa.int64()).cast(SCHEMAS["items"].field("created_at").type),
        "duration_s": np.round(rng.uniform(8, 58, size=n), 1),
        "thumbnail": thumbs,
        "frames": frames,
        "impressions": imps,
    })
    return table, leaf
