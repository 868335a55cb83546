"""The hand-made visual blocks (``colour``, ``shape``, ``texture``, ``layout``) of a thumbnail's
*foreground* (saturated pixels; grey background and overlays are ignored), made for the
synthetic platform's drawn thumbnails; see the package docstring for what each block measures
and why only drawn ``synth:`` thumbnails get them by default (``hand_made_on``)."""

from __future__ import annotations

import os

import numpy as np

from serendip.embeddings.config import VISUAL_BLOCKS, EmbeddingConfig


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
    for ref in tqdm(thumbnails, desc="visual features", disable=len(thumbnails) < 5000,
                    mininterval=5):
        pil = (load_image(ref, cfg.image_size, base_dir=base_dir, draft=cfg.image_size)
               if ref is not None and gets_hand_made(ref, cfg) else None)
        blocks = _hand_made(ref, pil, cfg, which)      # the one rule (silent, black, decoded)
        for name, vec in blocks.items():
            rows[name].append(vec)
    n = len(thumbnails)
    return {b: (np.asarray(rows[b], np.float32) if b in rows and n
                else np.zeros((n, 0), np.float32)) for b in VISUAL_BLOCKS}


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
