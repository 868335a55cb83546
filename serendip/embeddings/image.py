"""The ``image`` block: pooled ImageNet features of EfficientNet-Lite0 (its inference copy,
:func:`serendip.pretrained.efficientnet.inference_model`) at ``image_px`` pixels, each distinct
image run through the network once: cached by a hash of its content in memory
(``_IMAGE_MEMO``) and in ``image_features.parquet``. One decode of a picture feeds the network
and the hand-made blocks (:func:`image_blocks`)."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from serendip.embeddings.config import VISUAL_BLOCKS, EmbeddingConfig
from serendip.embeddings.hand_made import _hand_made, _silent_blocks, gets_hand_made

IMAGE_FEATURES_FILE = "image_features.parquet"
_MODEL_CACHE: dict[str, object] = {}      # the image network, loaded once per process
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
    vis: dict[str, dict[str, np.ndarray]] = {}
    for h, r in zip(hashes, refs):
        hand_made = bool(which) and gets_hand_made(r, cfg)
        if h not in todo and (hand_made or h not in feats):
            todo[h] = r                   # decoded for the network or the hand-made blocks
        elif which and not hand_made and h not in todo:
            vis[h] = _silent_blocks(cfg, which)   # cached photo: no decode for zero blocks
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
