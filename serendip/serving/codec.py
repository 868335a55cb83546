"""v2 tensors ↔ Python values: the checked decoding of request rows (text, ids, K, SHARE,
images) and the padded encoding of answers. Errors are :class:`~serendip.errors.SerendipError`
whose ``field`` names the input.

Images (THUMBNAIL, FRAMES) are encoded PNG/JPEG bytes or ``synth:`` URIs; an empty element is
padding. File paths are refused: a client must never make the server read its disk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from serendip.errors import SerendipError
from serendip.serving.contracts import MAX_FRAMES, MAX_ID_BYTES, ModelSpec


def as_bytes(x: Any) -> bytes:
    """One BYTES tensor element (bytes, ``np.bytes_`` or str) → bytes."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    if isinstance(x, np.bytes_):
        return bytes(x)
    return str(x).encode()


def decode_text(x: Any, name: str, limit: int, allow_empty: bool = False) -> str:
    """One BYTES element → stripped UTF-8 text of at most ``limit`` bytes.

    Raises:
        SerendipError: over ``limit`` bytes, not UTF-8, or empty (unless ``allow_empty``);
            ``field`` is ``name``.
    """
    b = as_bytes(x)
    if len(b) > limit:
        raise SerendipError(f"is {len(b)} bytes, over {limit}", field=name,
                            fix=f"send a shorter {name}")
    try:
        s = b.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SerendipError("is not valid UTF-8", field=name, fix="send UTF-8 text") from None
    if not s and not allow_empty:
        raise SerendipError("is empty", field=name, fix=f"send a non-empty {name}")
    return s


def _elements(row: np.ndarray | None, name: str, limit: int, what: str, fix: str) -> list:
    """The non-empty elements of one row (empty ones are padding), at most ``limit``."""
    if row is None:
        return []
    vals = [v for v in np.asarray(row, dtype=object).reshape(-1) if len(as_bytes(v))]
    if len(vals) > limit:
        raise SerendipError(f"has {len(vals)} {what}, over {limit}", field=name, fix=fix)
    return vals


def decode_ids(row: np.ndarray | None, name: str, limit: int) -> list[str]:
    """The ids of one row (padding dropped), at most ``limit``, each at most ``MAX_ID_BYTES``.

    Raises:
        SerendipError: too many ids, or an id too long or not UTF-8 (``field`` is ``name``).
    """
    return [decode_text(v, name, MAX_ID_BYTES) for v in _elements(
        row, name, limit, "ids", f"send the most recent {limit} ids")]


def decode_k(row: np.ndarray | None, default: int, limit: int) -> int:
    """K of one row (INT32), ``default`` when absent.

    Raises:
        SerendipError: K outside [1, ``limit``] (``field`` K).
    """
    if row is None:
        return default
    k = int(np.asarray(row).reshape(-1)[0])
    if not 1 <= k <= limit:
        raise SerendipError(f"is {k}, outside [1, {limit}]", field="K",
                            fix=f"ask for between 1 and {limit} results")
    return k


def decode_image(data: Any, name: str):
    """Encoded image bytes → PIL RGB, or a checked ``synth:`` URI (kept as a string so the
    model renders it at its own size); errors name the input."""
    from serendip.data.media import Visual, load_image

    b = as_bytes(data)
    try:
        if b.startswith(b"synth:"):
            uri = b.decode("ascii")
            Visual.parse(uri)
            return uri
        return load_image(b)
    except (SerendipError, UnicodeDecodeError) as e:
        msg = e.message if isinstance(e, SerendipError) else "is not an ASCII synth: URI"
        fix = e.fix if isinstance(e, SerendipError) else "send PNG/JPEG bytes"
        raise SerendipError(msg, field=name, fix=fix) from None


def decode_images(row: np.ndarray | None, name: str) -> list:
    """The images of one row (:func:`decode_image`; padding dropped), at most ``MAX_FRAMES``."""
    vals = _elements(row, name, MAX_FRAMES, "images", f"send at most {MAX_FRAMES} frames")
    return [decode_image(v, f"{name}[{i}]") for i, v in enumerate(vals)]


def input_rows(arrays: Mapping[str, np.ndarray], name: str, batch: int) -> list:
    """Input ``name`` split into its ``batch`` rows (``None`` per row when it was not sent)."""
    a = arrays.get(name)
    return [None] * batch if a is None else [a[i] for i in range(batch)]


def batch_size(arrays: Mapping[str, np.ndarray], spec: ModelSpec) -> int:
    """Rows of a request: the leading dimension of its first input (0 when none was sent)."""
    for t in spec.inputs:
        if t.name in arrays:
            return int(np.asarray(arrays[t.name]).shape[0])
    return 0


def pad_rows(rows: Sequence[Sequence], fill: Any, dtype) -> np.ndarray:
    """Rows of unequal length → a [B, max_len] array padded with ``fill`` (``""`` ids, NaN
    scores): a short cluster gives fewer than k items, stated rather than invented."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), fill, dtype=dtype)
    for i, r in enumerate(rows):
        for j, v in enumerate(r):
            out[i, j] = v
    return out


def bytes_rows(rows: Sequence[Sequence[str]]) -> np.ndarray:
    """Rows of strings → a [B, max_len] BYTES array padded with ``b""``."""
    return pad_rows([[s.encode() for s in r] for r in rows], b"", np.object_)


def bytes_column(values: Sequence[str]) -> np.ndarray:
    """One string per row → a [B, 1] BYTES array."""
    return np.array([[v.encode()] for v in values], dtype=np.object_).reshape(len(values), 1)


Outputs = dict[str, np.ndarray]          # output name → [B, ...] array


def decode_share(row: np.ndarray | None, default: float) -> float:
    """The request's SHARE (FP32 in [0, 1]) or the server default; else a SerendipError."""
    import math

    if row is None:
        return default
    flat = np.asarray(row).reshape(-1)
    if flat.size != 1 or flat.dtype.kind not in "fiu":
        raise SerendipError(f"must be one number per row, got {flat.size} value(s) of "
                            f"{flat.dtype}", field="SHARE",
                            fix="send SHARE as FP32 [[0.2]] (the serendipitous share of K)")
    v = float(flat[0])
    if math.isfinite(v):      # FP32 on the wire: 0.3 arrives as 0.30000001 (ceil(3.0000001) = 4)
        v = round(v, 6)
    if not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise SerendipError(f"{v} is not in [0, 1]", field="SHARE",
                            fix="send a share in [0, 1], e.g. 0.2 for 2 of 10 items")
    return v
