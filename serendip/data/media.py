"""Item media: thumbnails and frames as PIL images, from a file path, raw bytes, or a
``synth:`` URI that is rendered deterministically on demand.

Synthetic media carry the latent topic visually (README 'The synthetic platform'): the main element's *shape*
encodes the level-1 topic, its *colour* the level-2 topic, its *texture* the level-3 topic and
its *layout* the level-4 topic. A small grey *motif* patch shows the texture of the topic's
bridge (the serendipitous sibling its viewers enjoy). The thumbnail is clean and always shows
the motif; each frame is jittered, shows the motif only half the time and is a cut-away
(unrelated content) a quarter of the time — so a thumbnail beats one random frame and more
frames help, with diminishing returns.
"""

from __future__ import annotations

import colorsys
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from serendip.errors import SerendipError

N_FRAMES = 8
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star", "ring", "hexagon")
TEXTURES = ("solid", "horizontal stripes", "vertical stripes", "dots", "checker", "diagonal")
LAYOUTS = ("centre", "upper left", "lower right", "pair")
MAX_IMAGE_BYTES = 8 * 1024 * 1024
MAX_IMAGE_PIXELS = 4096 * 4096
P_CUTAWAY = 0.25
P_MOTIF_IN_FRAME = 0.5


@dataclass(frozen=True)
class Visual:
    """What a synthetic item looks like; every field is an index into the tables above."""

    shape: int
    hue: int          # degrees, 0..359
    texture: int
    layout: int
    motif: int        # texture index of the bridge topic, -1 for none
    seed: int

    def uri(self, kind: str) -> str:
        return (f"synth:{self.shape}.{self.hue}.{self.texture}.{self.layout}."
                f"{self.motif}.{self.seed}#{kind}")

    @staticmethod
    def parse(uri: str) -> tuple[Visual, str]:
        try:
            body, kind = uri[len("synth:"):].split("#", 1)
            shape, hue, tex, lay, motif, seed = (int(x) for x in body.split("."))
        except ValueError:
            raise SerendipError(f"malformed synthetic media URI {uri!r}", field="image",
                                fix="use synth:<shape>.<hue>.<texture>.<layout>.<motif>.<seed>"
                                    "#thumb|fN") from None
        return Visual(shape, hue, tex, lay, motif, seed), kind


def thumbnail_uri(v: Visual) -> str:
    return v.uri("thumb")


def frame_uris(v: Visual, n: int = N_FRAMES) -> list[str]:
    return [v.uri(f"f{k}") for k in range(n)]


def sample_frames(frames: list, n: int) -> list:
    """``n`` uniformly spaced frames (centre of each of ``n`` equal segments), as the paper."""
    if n <= 0:
        raise SerendipError(f"asked for {n} frames", field="frames", fix="use n >= 1")
    if not frames:
        raise SerendipError("item has no frames", field="frames",
                            fix="give the item frames, use its thumbnail (--thumbnail), or use "
                                "the text prompt (--strategy text)")
    m = len(frames)
    return [frames[min(m - 1, int((i + 0.5) * m / n))] for i in range(n)]


# ---------------------------------------------------------------- rendering
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x, y


def _shape_mask(shape: int, x, y, cx: float, cy: float, r: float) -> np.ndarray:
    dx, dy = x - cx, y - cy
    d = np.sqrt(dx * dx + dy * dy)
    name = SHAPES[shape % len(SHAPES)]
    if name == "circle":
        return d < r
    if name == "square":
        return (np.abs(dx) < r * 0.85) & (np.abs(dy) < r * 0.85)
    if name == "triangle":
        return (dy < r * 0.8) & (dy > -r) & (np.abs(dx) < (dy + r) * 0.6)
    if name == "diamond":
        return np.abs(dx) + np.abs(dy) < r
    if name == "cross":
        return ((np.abs(dx) < r / 3) & (np.abs(dy) < r)) | ((np.abs(dy) < r / 3) & (np.abs(dx) < r))
    if name == "star":
        theta = np.arctan2(dy, dx)
        return d < r * (0.55 + 0.45 * np.cos(5 * theta))
    if name == "ring":
        return (d < r) & (d > r * 0.55)
    return np.maximum(np.abs(dx) * 0.866 + np.abs(dy) * 0.5, np.abs(dy)) < r  # hexagon


def _texture(texture: int, x, y, size: int) -> np.ndarray:
    p = max(2, size // 16)
    name = TEXTURES[texture % len(TEXTURES)]
    xi, yi = x.astype(np.int32), y.astype(np.int32)
    if name == "solid":
        return np.ones_like(x, dtype=bool)
    if name == "horizontal stripes":
        return (yi // p) % 2 == 0
    if name == "vertical stripes":
        return (xi // p) % 2 == 0
    if name == "dots":
        q = 2 * p
        return ((xi % q - q / 2) ** 2 + (yi % q - q / 2) ** 2) < (p * 0.9) ** 2
    if name == "checker":
        return ((xi // p) + (yi // p)) % 2 == 0
    return ((xi + yi) // p) % 2 == 0  # diagonal


def _rgb(hue: int, sat: float = 0.85, val: float = 0.95) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((hue % 360) / 360.0, sat, val), dtype=np.float32)


_LAYOUT_POS = {0: [(0.5, 0.5, 0.30)], 1: [(0.34, 0.36, 0.22)], 2: [(0.64, 0.64, 0.22)],
               3: [(0.28, 0.5, 0.17), (0.72, 0.5, 0.17)]}


def _draw(canvas, x, y, size, shape, hue, texture, layout, jitter, rng) -> None:
    colour = _rgb(hue)
    pattern = _texture(texture, x, y, size)
    for (fx, fy, fr) in _LAYOUT_POS[layout % 4]:
        cx = fx * size + (rng.uniform(-jitter, jitter) * size if jitter else 0)
        cy = fy * size + (rng.uniform(-jitter, jitter) * size if jitter else 0)
        r = fr * size * (1 + (rng.uniform(-0.15, 0.15) if jitter else 0))
        mask = _shape_mask(shape, x, y, cx, cy, r)
        shade = np.where(pattern, 1.0, 0.35)[..., None] * colour
        canvas[mask] = shade[mask]


def _draw_motif(canvas, x, y, size, motif, corner) -> None:
    s = max(6, size * 7 // 32)
    x0 = 1 if corner in (0, 2) else size - s - 1
    y0 = 1 if corner in (0, 1) else size - s - 1
    pattern = _texture(motif, x, y, size)[y0:y0 + s, x0:x0 + s]
    canvas[y0:y0 + s, x0:x0 + s] = np.where(pattern, 0.92, 0.15)[..., None]


def render(v: Visual, kind: str, size: int = 64) -> Image.Image:
    """Draw the thumbnail (``kind='thumb'``) or frame ``fK`` of a synthetic item."""
    frame = -1 if kind == "thumb" else int(kind[1:])
    rng = np.random.default_rng([v.seed, frame + 1])
    x, y = _grid(size)
    canvas = (0.1 + 0.12 * rng.random((size, size, 1), dtype=np.float32)).repeat(3, axis=2)
    if frame < 0:
        _draw(canvas, x, y, size, v.shape, v.hue, v.texture, v.layout, 0.0, rng)
        if v.motif >= 0:
            _draw_motif(canvas, x, y, size, v.motif, corner=1)
    elif rng.random() < P_CUTAWAY:
        _draw(canvas, x, y, size, int(rng.integers(len(SHAPES))), int(rng.integers(360)),
              int(rng.integers(len(TEXTURES))), int(rng.integers(len(LAYOUTS))), 0.1, rng)
    else:
        _draw(canvas, x, y, size, v.shape, (v.hue + int(rng.integers(-8, 9))) % 360,
              v.texture, v.layout, 0.06, rng)
        if v.motif >= 0 and rng.random() < P_MOTIF_IN_FRAME:
            _draw_motif(canvas, x, y, size, v.motif, corner=int(rng.integers(4)))
    canvas += rng.normal(0, 0.03, canvas.shape).astype(np.float32)
    return Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------- loading
MEDIA_BASE_FILE = "media_base.txt"


def media_root(workdir: str | os.PathLike) -> Path:
    """The directory relative media paths of ``workdir``'s items table resolve against: the
    work directory itself, or — when its items were copied from a data directory (a scoring
    state volume, see :func:`serendip.scoring.prepare_state`) — the data directory recorded in
    ``<workdir>/media_base.txt``."""
    marker = Path(workdir) / MEDIA_BASE_FILE
    if marker.is_file():
        text = marker.read_text().strip()
        if text:
            return Path(text)
    return Path(workdir)


def resolve_media(ref, base_dir: str | os.PathLike | None):
    """Where a media reference points: the ONE rule every stage uses (README 'Data contracts').

    A relative path in an items table is relative to the *data directory* holding that table
    (``base_dir``), never to the current directory; absolute paths, URIs (``synth:``,
    ``s3://``...), raw bytes and ``None`` are returned unchanged. Paths come back as ``str``.
    """
    if ref is None or isinstance(ref, (bytes, bytearray, memoryview)):
        return ref
    text = os.fspath(ref) if isinstance(ref, os.PathLike) else str(ref)
    if text.startswith("synth:") or "://" in text or base_dir is None:
        return text
    path = Path(text)
    return text if path.is_absolute() else str(Path(base_dir) / path)


def load_image(ref: str | bytes | os.PathLike, size: int | None = None,
               base_dir: str | os.PathLike | None = None,
               draft: int | None = None) -> Image.Image:
    """Return an RGB image for a media reference (path, bytes or ``synth:`` URI).

    ``draft``: a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both
    sides >= ``draft`` pixels (PIL's draft mode: several times cheaper than a full decode of
    a large photo when only a small image is needed); other formats are decoded in full.

    Corrupt, missing or oversized images raise :class:`SerendipError` naming the image, so a
    server can answer 400 instead of crashing.
    """
    if isinstance(ref, str) and ref.startswith("synth:"):
        v, kind = Visual.parse(ref)
        return render(v, kind, size or 64)
    if isinstance(ref, (bytes, bytearray, memoryview)):
        data = bytes(ref)
        if len(data) > MAX_IMAGE_BYTES:
            raise SerendipError(f"image is {len(data)} bytes, over {MAX_IMAGE_BYTES}",
                                field="image", fix="send a smaller image (e.g. a 224 px JPEG)")
        src: io.BytesIO | Path = io.BytesIO(data)
        label = f"<{len(data)} bytes>"
    else:
        src = Path(resolve_media(ref, base_dir))
        label = str(src)
        if not src.exists():
            raise SerendipError(f"image file {label} does not exist", field="image",
                                fix="check the path in the items table (relative paths are "
                                    "resolved against the data directory)")
    try:
        with Image.open(src) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise SerendipError(f"image {label} is {im.width}x{im.height}, too large",
                                    field="image", fix="resize it below 4096x4096")
            if draft and im.format == "JPEG":
                im.draft("RGB", (draft, draft))
            img = im.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise SerendipError(f"image {label} cannot be decoded ({type(e).__name__})",
                            field="image", fix="send a valid PNG or JPEG") from None
    if size:
        img = img.resize((size, size), Image.BILINEAR)
    return img
