"""The fitted :class:`Embedder`: the catalogue statistics an embedding depends on (block centres
and scales, TF-IDF state, behaviour vectors of the warm items and the cold-start map), so new
items are embedded exactly like the catalogue (:func:`serendip.tree.assign_new_items`); saved as
``embedder.safetensors`` + ``embedder.json`` (no pickle: nothing names a module)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from serendip.embeddings.behaviour import behaviour_features
from serendip.embeddings.combine import block_report, block_stats, combine_blocks, scale_block
from serendip.embeddings.config import CONTENT_BLOCKS, VISUAL_BLOCKS, EmbeddingConfig
from serendip.embeddings.hand_made import gets_hand_made, visual_features
from serendip.embeddings.image import image_blocks
from serendip.embeddings.text import _resolve_text_encoder, fit_tfidf, text_features
from serendip.errors import ConfigError


@dataclass
class Embedder:
    """The catalogue statistics an embedding depends on, so that new items (batch scoring)
    are embedded exactly like the items the tree was built on: each block's mean and scale,
    the TF-IDF state when that encoder is used, and the behaviour block's warm vectors
    (by item id) and cold-start ridge map."""

    cfg: EmbeddingConfig
    encoder: str
    means: dict[str, np.ndarray]
    scales: dict[str, float]
    tfidf: dict | None = None
    behaviour: dict = field(default_factory=dict)   # ids, vectors, coef, intercept
    cache_dir: str | None = None                    # where image features are cached

    def _has_images(self, items: pa.Table) -> bool:
        return ("thumbnail" in items.column_names
                and items.column("thumbnail").null_count < items.num_rows)

    def raw_blocks(self, items: pa.Table, base_dir=None) -> dict[str, np.ndarray]:
        """Per-block features before normalisation (n × d each; d = 0 when a block is off)."""
        cfg = self.cfg
        n = items.num_rows
        titles = [t or "" for t in items.column("title").to_pylist()]
        # text also feeds the cold-start map of the behaviour block when weighted 0 itself
        text_needed = cfg.w_text > 0 or (cfg.w_behaviour > 0 and cfg.cold_start == "ridge")
        blocks = {"text": text_features(titles, cfg, self.encoder, self.tfidf, text_needed)}
        thumbs = (items.column("thumbnail").to_pylist() if "thumbnail" in items.column_names
                  else [None] * n)
        fitted_image = self.means.get("image")
        want_image = bool(cfg.w_image > 0 and (len(fitted_image) if fitted_image is not None
                                               else self._has_images(items)))
        if any(b in self.means for b in VISUAL_BLOCKS):    # the blocks it was fitted with
            which = tuple(b for b in VISUAL_BLOCKS if len(self.means.get(b, ())))
        else:      # fitting: those weighted > 0, when a thumbnail gets hand-made cues at all
            which = tuple(b for b in VISUAL_BLOCKS if getattr(cfg, f"w_{b}") > 0)
            if which and not any(t is not None and gets_hand_made(t, cfg) for t in thumbs):
                which = ()
        if want_image:      # one decode per picture feeds the network and the hand-made blocks
            blocks["image"], visual = image_blocks(thumbs, cfg, base_dir, self.cache_dir, which)
        else:               # no network: the hand-made blocks from thumbnails at image_size
            blocks["image"] = np.zeros((n, 0), np.float32)
            visual = (visual_features(thumbs, cfg, base_dir=base_dir, which=which) if which
                      else {b: np.zeros((n, 0), np.float32) for b in VISUAL_BLOCKS})
        blocks.update(visual)   # no pictures in the catalogue: the hand-made cues say nothing
        return blocks

    def _scaled(self, name: str, x: np.ndarray) -> np.ndarray:
        """Row-normalised, centred, unit total variance; an all-zero row (no data for this
        item, e.g. a cold item's behaviour) sits at the centre: the block is silent for it."""
        return scale_block(x, self.means[name], self.scales[name])

    def _content(self, blocks: dict[str, np.ndarray]) -> np.ndarray:
        parts = [self._scaled(b, blocks[b]) for b in CONTENT_BLOCKS
                 if b in blocks and blocks[b].shape[1] and len(self.means.get(b, ()))]
        return np.concatenate(parts, axis=1) if parts else np.zeros((0, 0))

    def behaviour_block(self, item_ids: list[str], blocks: dict[str, np.ndarray]
                        ) -> np.ndarray:
        """Behaviour vectors (n × d): the fitted vector of a warm catalogue item, else the
        cold-start map from the item's content blocks (zeros with ``cold_start="zeros"``)."""
        b = self.behaviour
        if not b:
            return np.zeros((len(item_ids), 0), np.float32)
        pos = {iid: i for i, iid in enumerate(b["ids"])}
        idx = np.array([pos.get(i, -1) for i in item_ids], np.int64)
        out = np.zeros((len(item_ids), b["vectors"].shape[1]), np.float64)
        warm = idx >= 0
        out[warm] = b["vectors"][idx[warm]]
        cold = ~warm
        if cold.any() and "coef" in b:
            content = self._content({k: v[cold] for k, v in blocks.items()})
            if content.shape[1] == b["coef"].shape[0]:
                out[cold] = content @ b["coef"] + b["intercept"]
        return out

    def combine(self, blocks: dict[str, np.ndarray]) -> np.ndarray:
        """Blocks → the final embedding (n × dim, float32, rows L2-normalised;
        :func:`~serendip.embeddings.combine.combine_blocks`).

        Raises:
            ConfigError: every block is empty or weighted 0.
        """
        return combine_blocks(blocks, self.cfg, self.means, self.scales)

    def transform(self, items: pa.Table, base_dir=None) -> np.ndarray:
        """Embeddings of (new) items with the fitted statistics (new items are cold: their
        behaviour block comes from the cold-start map)."""
        if items.num_rows == 0:
            return np.zeros((0, self.dim), np.float32)
        blocks = self.raw_blocks(items, base_dir)
        blocks["behaviour"] = self.behaviour_block(items.column("item_id").to_pylist(), blocks)
        return self.combine(blocks)

    @property
    def dim(self) -> int:
        return int(sum(len(m) for n, m in self.means.items()
                       if getattr(self.cfg, f"w_{n}") > 0 and len(m)))

    def block_report(self) -> dict[str, dict]:
        """Per block: weight, dimension and the share of squared distance it carries
        (``w² / Σ w²`` over the blocks in use); blocks not in use are listed with dim 0."""
        return block_report(self.cfg, self.means,
                            len(self.behaviour["ids"]) if self.behaviour else None)

    def save(self, out_dir: str | os.PathLike) -> Path:
        from safetensors.numpy import save

        from serendip.data.io import atomic_write_bytes

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"mean.{k}": np.ascontiguousarray(v, np.float64) for k, v in self.means.items()
                   if len(v)}
        if self.tfidf is not None:
            tensors["tfidf.idf"] = np.ascontiguousarray(self.tfidf["idf"])
            tensors["tfidf.components"] = np.ascontiguousarray(self.tfidf["components"])
        for k in ("vectors", "coef", "intercept"):
            if k in self.behaviour:
                tensors[f"behaviour.{k}"] = np.ascontiguousarray(self.behaviour[k], np.float64)
        atomic_write_bytes(out / "embedder.safetensors", save(tensors))
        meta = {"config": asdict(self.cfg), "encoder": self.encoder, "scales": self.scales,
                "blocks": {k: len(v) for k, v in self.means.items()},
                "tfidf_vocab": self.tfidf["vocab"] if self.tfidf is not None else None,
                "behaviour_ids": self.behaviour.get("ids")}
        atomic_write_bytes(out / "embedder.json", json.dumps(meta).encode())
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> Embedder:
        from safetensors.numpy import load_file

        from serendip.config import load_config

        d = Path(path)
        if not (d / "embedder.json").exists():
            raise ConfigError(f"no saved embedder in {d}", field="embedder",
                              fix="run `serendip cluster` (it saves the embedder with the tree)")
        meta = json.loads((d / "embedder.json").read_text())
        # saved before hand_made_on existed: every thumbnail got the hand-made blocks then
        meta["config"].setdefault("hand_made_on", "all")
        t = load_file(str(d / "embedder.safetensors"))
        means = {k: t.get(f"mean.{k}", np.zeros(0)) for k in meta["blocks"]}
        tfidf = None
        if meta.get("tfidf_vocab") is not None:
            tfidf = {"vocab": meta["tfidf_vocab"], "idf": t["tfidf.idf"],
                     "components": t["tfidf.components"]}
        behaviour = {}
        if meta.get("behaviour_ids") is not None:
            behaviour = {"ids": meta["behaviour_ids"], "vectors": t["behaviour.vectors"]}
            if "behaviour.coef" in t:
                behaviour["coef"] = t["behaviour.coef"]
                behaviour["intercept"] = t["behaviour.intercept"]
        return cls(load_config(EmbeddingConfig, settings=meta["config"]), meta["encoder"], means,
                   {k: float(v) for k, v in meta["scales"].items()}, tfidf, behaviour)


def fit_embedder(items: pa.Table, cfg: EmbeddingConfig | None = None,
                 base_dir: str | os.PathLike | None = None,
                 interactions: pa.Table | None = None,
                 cache_dir: str | os.PathLike | None = None) -> tuple[Embedder, np.ndarray]:
    """Fit the embedding on the catalogue (block statistics, behaviour vectors from
    ``interactions`` when given, cold-start map) and return it with the catalogue's
    embeddings (n × dim, float32, rows L2-normalised).

    Raises:
        ConfigError: no items, bad settings, or every block empty / weighted 0.
    """
    cfg = cfg or EmbeddingConfig()
    cfg.check()
    if items.num_rows == 0:
        raise ConfigError("no items to embed", field="items", fix="pass a non-empty items table")
    encoder = _resolve_text_encoder(cfg)
    tfidf = None
    if encoder == "tfidf" and (cfg.w_text > 0 or (cfg.w_behaviour > 0
                                                   and cfg.cold_start == "ridge")):
        tfidf = fit_tfidf([t or "" for t in items.column("title").to_pylist()], cfg)
    embedder = Embedder(cfg, encoder, {}, {}, tfidf,
                        cache_dir=str(cache_dir) if cache_dir is not None else None)
    blocks = embedder.raw_blocks(items, base_dir)
    for name, x in blocks.items():
        embedder.means[name], embedder.scales[name] = block_stats(x)
    n = items.num_rows
    beh, warm = (behaviour_features(items, interactions, cfg) if cfg.w_behaviour > 0
                 else (np.zeros((n, 0), np.float32), np.zeros(n, bool)))
    if beh.shape[1]:
        ids = items.column("item_id").to_pylist()
        embedder.behaviour = {"ids": [i for i, w in zip(ids, warm) if w],
                              "vectors": beh[warm].astype(np.float64)}
        content = embedder._content(blocks)
        if cfg.cold_start == "ridge" and content.shape[1]:   # new items are always cold
            from sklearn.linear_model import Ridge

            r = Ridge(alpha=cfg.ridge_alpha).fit(content[warm], beh[warm])
            embedder.behaviour["coef"] = r.coef_.T.astype(np.float64)
            embedder.behaviour["intercept"] = np.asarray(r.intercept_, np.float64)
        full = embedder.behaviour_block(ids, blocks)
        embedder.means["behaviour"], embedder.scales["behaviour"] = block_stats(full)
        blocks["behaviour"] = full
    else:
        embedder.means["behaviour"], embedder.scales["behaviour"] = block_stats(beh)
    return embedder, embedder.combine(blocks)
