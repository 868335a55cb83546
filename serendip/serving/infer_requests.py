"""The v2 infer requests the recommend flow sends to the served ``mllm`` and ``retriever``, and
the rows it reads back. Data the server builds a request from (a catalogue item's title and
media) is fitted to the server's own limits before it reaches the checks written for clients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from serendip.errors import SerendipError
from serendip.serving.cluster_choice import ClusterChoice, top_choice
from serendip.serving.codec import as_bytes
from serendip.serving.contracts import MAX_FRAMES, MAX_K_ITEMS, MAX_TEXT_BYTES


def fit_text(text: str, limit: int = MAX_TEXT_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes at a character boundary (server-side
    data fitted to the server's own input limits; a client's text is refused instead)."""
    b = text.encode("utf-8")
    return text if len(b) <= limit else b[:limit].decode("utf-8", errors="ignore")


def fit_frames(frames: Sequence, limit: int = MAX_FRAMES) -> list:
    """At most ``limit`` frames, evenly spaced over the item (first and last kept)."""
    frames = list(frames)
    if len(frames) <= limit:
        return frames
    idx = np.linspace(0, len(frames) - 1, limit).round().astype(int)
    return [frames[i] for i in idx]


def mllm_request(info: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The ``mllm`` input tensors for one known item (media refs become bytes: a ``synth:``
    URI is sent as is, a file is read here — on the server that owns the items table). The
    catalogue's title and description are cut to ``MAX_TEXT_BYTES`` and its frames sampled to
    ``MAX_FRAMES`` (:func:`fit_text`, :func:`fit_frames`): the client sent only an id."""
    from pathlib import Path

    def media(ref) -> bytes:
        if isinstance(ref, (bytes, bytearray)):
            return bytes(ref)
        ref = str(ref)
        if ref.startswith("synth:"):
            return ref.encode()
        from serendip.data.media import resolve_media  # the one rule: against the data dir

        return Path(resolve_media(ref, info.get("base_dir"))).read_bytes()

    frames = [media(f) for f in fit_frames(info.get("frames") or [])]
    title = fit_text(str(info.get("title") or ""))
    context = fit_text(str(info.get("context_description") or ""))
    arrays = {"TITLE": np.array([[title.encode()]], dtype=np.object_),
              "CONTEXT_DESCRIPTION": np.array([[context.encode()]], dtype=np.object_),
              "K": np.array([[1]], dtype=np.int32)}
    cands = list(info.get("candidates") or [])[:MAX_K_ITEMS]
    if cands:           # only the context's serendipitous candidates may be answered
        arrays["CANDIDATES"] = np.array([[c.encode() for c in cands]], dtype=np.object_)
    if info.get("thumbnail") is not None:
        arrays["THUMBNAIL"] = np.array([[media(info["thumbnail"])]], dtype=np.object_)
    if frames:
        arrays["FRAMES"] = np.array([frames], dtype=np.object_)
    return arrays


def retriever_request(history: Sequence[str], cluster_id: str | None, k: int
                      ) -> dict[str, np.ndarray]:
    """The ``retriever`` input tensors (``cluster_id`` None: the whole catalogue)."""
    arrays = {"CLUSTER_ID": np.array([[(cluster_id or "").encode()]], dtype=np.object_),
              "K": np.array([[k]], dtype=np.int32)}
    if history:
        arrays["HISTORY"] = np.array([[h.encode() for h in history]], dtype=np.object_)
    return arrays


def first_row_items(outputs: Mapping[str, np.ndarray]) -> list[tuple[str, float]]:
    """(item_id, score) pairs of row 0 of a retriever/recommend answer, padding dropped."""
    ids = [as_bytes(x).decode() for x in np.asarray(outputs["ITEM_IDS"], dtype=object)[0]]
    scores = np.asarray(outputs["SCORES"], dtype=np.float32)[0]
    return [(i, float(s)) for i, s in zip(ids, scores) if i]


def first_row_choice(outputs: Mapping[str, np.ndarray], source: str = "mllm") -> ClusterChoice:
    cid = [as_bytes(x).decode() for x in np.asarray(outputs["CLUSTER_IDS"], dtype=object)[0]]
    desc = [as_bytes(x).decode() for x in np.asarray(outputs["DESCRIPTIONS"], dtype=object)[0]]
    choice = top_choice(cid, desc, source)
    if choice is None:
        raise SerendipError("the mllm returned no cluster", field="ITEM_ID",
                            fix="check the served mllm model")
    return choice
