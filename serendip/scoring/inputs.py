"""Predictor inputs and the content hash that decides whether an item changed."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa


# ------------------------------------------------------------------ content hash
def _media_key(ref) -> str:
    if ref is None:
        return ""
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return "sha256:" + hashlib.sha256(bytes(ref)).hexdigest()
    return str(ref)


def content_hash(title: str | None, thumbnail, frames, context_description: str | None) -> str:
    """What the prompt is built from: title, media references (bytes hashed), and the item's
    own cluster description. A change in any of them makes the item "changed"."""
    payload = json.dumps([title or "", _media_key(thumbnail),
                          [_media_key(f) for f in (frames or [])], context_description or ""])
    return hashlib.sha256(payload.encode()).hexdigest()[:24]



def predictor_inputs(sel: pa.Table, item_clusters: pa.Table, clusters: pa.Table, level: int,
            needs_media: bool) -> tuple[list[dict | None], list[str], dict[int, str]]:
    """Predictor inputs and content hashes for the selected items (same order); an item that
    cannot be prompted gets ``None`` and its reason in the returned ``{position: reason}``."""
    ic = dict(zip(item_clusters.column("item_id").to_pylist(),
                  item_clusters.column(f"c{level}").to_pylist()))
    desc = dict(zip(clusters.column("cluster_id").to_pylist(),
                    clusters.column("description").to_pylist()))
    inputs: list[dict | None] = []
    hashes: list[str] = []
    failed: dict[int, str] = {}
    for pos, row in enumerate(sel.select(["item_id", "title", "thumbnail", "frames"]).to_pylist()):
        cd = desc.get(ic.get(row["item_id"]))
        frames = [f for f in (row["frames"] or []) if f]
        if cd is None:
            failed[pos] = (f"item_clusters: no level-{level} cluster description (fix: re-run "
                           "`serendip cluster`; clusters and item_clusters must come from the "
                           "same tree)")
        elif needs_media and not row["thumbnail"] and not frames:
            failed[pos] = ("items.thumbnail: neither thumbnail nor frames, but the model's "
                           "prompt needs images (fix: add media for the item, or score with a "
                           "text-strategy model)")
        if pos in failed:
            inputs.append(None)
            hashes.append("")
            continue
        inputs.append({"title": row["title"] or "", "context_description": cd,
                       "thumbnail": row["thumbnail"] or None, "frames": frames or None})
        hashes.append(content_hash(row["title"], row["thumbnail"], frames, cd))
    return inputs, hashes, failed
