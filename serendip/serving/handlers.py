"""The model handlers: one v2 request batch in, one answer (or error) per request out. Triton's
Python backend (:mod:`serendip.serving.triton_backend`) and the KServe fallback run the very
same handlers, so both servers answer identically."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from serendip.errors import SerendipError
from serendip.serving.codec import (
    Outputs,
    batch_size,
    bytes_column,
    bytes_rows,
    decode_ids,
    decode_images,
    decode_k,
    decode_text,
    input_rows,
    pad_rows,
)
from serendip.serving.contracts import (
    MAX_HISTORY,
    MAX_ID_BYTES,
    MAX_K_ITEMS,
    MAX_K_MLLM,
    MAX_TEXT_BYTES,
    MLLM,
    RETRIEVER,
)
from serendip.serving.errors import UnknownCluster

T = TypeVar("T")


def decode_each(decode: Callable[[Mapping[str, np.ndarray]], T],
                requests: Sequence[Mapping[str, np.ndarray]]) -> list[T | SerendipError]:
    """``decode`` applied to each request on its own: a bad request becomes its own
    :class:`~serendip.errors.SerendipError` and never fails the others (Triton answers each
    request of a dynamic batch separately)."""
    out: list[T | SerendipError] = []
    for arrays in requests:
        try:
            out.append(decode(arrays))
        except SerendipError as e:
            out.append(e)
    return out


class MllmHandler:
    """``mllm``: context item (title, images) → its top-k serendipitous clusters, under the
    trie constraint, so every answer is a valid cluster."""

    spec = MLLM

    def __init__(self, predictor):
        self.predictor = predictor
        self.model_version = str(getattr(predictor, "model_version", "") or "unversioned")
        self.max_k = min(MAX_K_MLLM, len(getattr(predictor, "cluster_ids", [])) or MAX_K_MLLM)

    @classmethod
    def load(cls, model_dir, batch_size: int = 8) -> MllmHandler:
        from serendip.mllm.inference import ClusterPredictor

        return cls(ClusterPredictor.load(model_dir, batch_size=batch_size))

    def _candidates(self, row: np.ndarray | None) -> tuple[str, ...] | None:
        """CANDIDATES of one row: cluster ids of this model (padding dropped), or None."""
        if row is None:
            return None
        ids = [c for c in decode_ids(row, "CANDIDATES", MAX_K_ITEMS) if c]
        if not ids:
            return None
        known = set(getattr(self.predictor, "cluster_ids", ()) or ())
        unknown = [c for c in ids if known and c not in known]
        if unknown:
            raise SerendipError(f"{unknown[0]!r} is not a cluster of the served model",
                                field="CANDIDATES",
                                fix="send level-l cluster ids of the served tree (e.g. "
                                    "the context's serendipitous candidates)")
        return tuple(dict.fromkeys(ids))

    def _decode(self, arrays: Mapping[str, np.ndarray]) -> tuple[list[dict], list[int]]:
        batch = batch_size(arrays, self.spec)
        rows, ks = [], []
        for title, ctx, thumb, frames, k, cand in zip(*(input_rows(arrays, n, batch) for n in (
                "TITLE", "CONTEXT_DESCRIPTION", "THUMBNAIL", "FRAMES", "K", "CANDIDATES"))):
            x = {"title": decode_text(np.asarray(title).reshape(-1)[0], "TITLE", MAX_TEXT_BYTES,
                                allow_empty=True),
                 "context_description": "" if ctx is None else decode_text(
                     np.asarray(ctx).reshape(-1)[0], "CONTEXT_DESCRIPTION", MAX_TEXT_BYTES,
                     allow_empty=True)}
            thumbs = decode_images(thumb, "THUMBNAIL")
            x["thumbnail"] = thumbs[0] if thumbs else None
            x["frames"] = decode_images(frames, "FRAMES") or None
            if self.predictor.prompt_config.uses_images:
                if self.predictor.prompt_config.use_thumbnail and x["thumbnail"] is None:
                    raise SerendipError("is required by this model (prompt uses the thumbnail)",
                                        field="THUMBNAIL", fix="send the item's thumbnail")
                if not self.predictor.prompt_config.use_thumbnail and not x["frames"]:
                    raise SerendipError("are required by this model (prompt uses frames)",
                                        field="FRAMES", fix="send the item's frames")
            x["candidates"] = self._candidates(cand)
            rows.append(x)
            ks.append(decode_k(k, 1, self.max_k))
        return rows, ks

    def infer(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[Outputs | SerendipError]:
        """Answer several requests with as few batched generate calls as possible (one per
        distinct k); a bad request gets its own error and never fails the others."""
        decoded = decode_each(self._decode, requests)
        flat = [(ri, j, x, k) for ri, d in enumerate(decoded) if not isinstance(d, SerendipError)
                for j, (x, k) in enumerate(zip(*d))]
        preds: dict[tuple[int, int], list] = {}
        # one batched call per distinct k, with and without candidate restriction
        for k, restricted in sorted({(f[3], f[2]["candidates"] is not None) for f in flat}):
            group = [f for f in flat if f[3] == k
                     and (f[2]["candidates"] is not None) == restricted]
            inputs = [{n: v for n, v in f[2].items() if n != "candidates"} for f in group]
            if restricted:
                out = self.predictor.predict(inputs, k=k, constrained=True,
                                             candidates=[list(f[2]["candidates"])
                                                         for f in group])
            else:
                out = self.predictor.predict(inputs, k=k, constrained=True)
            for f, p in zip(group, out):
                preds[(f[0], f[1])] = p
        results: list[Outputs | SerendipError] = []
        for ri, d in enumerate(decoded):
            if isinstance(d, SerendipError):
                results.append(d)
                continue
            rows = [preds[(ri, j)] for j in range(len(d[0]))]
            results.append({
                "CLUSTER_IDS": bytes_rows([[p.cluster_id or "" for p in r] for r in rows]),
                "DESCRIPTIONS": bytes_rows([[p.description for p in r] for r in rows]),
                "SCORES": pad_rows([[p.score for p in r] for r in rows], np.nan, np.float32),
                "MODEL_VERSION": bytes_column([self.model_version] * len(rows))})
        return results


class RetrieverHandler:
    """``retriever``: history + cluster id → top-k items of that cluster (an empty cluster id:
    of the whole catalogue), none already seen."""

    spec = RETRIEVER

    def __init__(self, retriever):
        self.retriever = retriever

    @classmethod
    def load(cls, model_dir) -> RetrieverHandler:
        from serendip.retriever import Retriever

        return cls(Retriever.load(model_dir))

    def _decode(self, arrays: Mapping[str, np.ndarray]) -> tuple[list, list, list]:
        batch = batch_size(arrays, self.spec)
        hist, cids, ks = [], [], []
        for h, c, k in zip(*(input_rows(arrays, n, batch) for n in ("HISTORY", "CLUSTER_ID", "K"))):
            cid = decode_text(np.asarray(c).reshape(-1)[0], "CLUSTER_ID", MAX_ID_BYTES,
                        allow_empty=True) or None          # empty: the whole catalogue
            if cid is not None and not self.retriever.has_cluster(cid):
                raise UnknownCluster(f"unknown cluster {cid!r}", field="CLUSTER_ID",
                                    fix="use a cluster id of the served cluster tree "
                                        "(path ids like '3.1.0')")
            hist.append(decode_ids(h, "HISTORY", MAX_HISTORY))
            cids.append(cid)
            ks.append(decode_k(k, 10, MAX_K_ITEMS))
        return hist, cids, ks

    def infer(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[Outputs | SerendipError]:
        """Answer several requests with one forward pass per distinct k; a bad request gets
        its own error and never fails the others."""
        decoded = decode_each(self._decode, requests)
        flat = [(ri, h, c, k) for ri, d in enumerate(decoded) if not isinstance(d, SerendipError)
                for h, c, k in zip(*d)]
        found: dict[int, list] = {}
        for k in sorted({f[3] for f in flat}):   # one forward pass per distinct k
            group = [f for f in flat if f[3] == k]
            out = self.retriever.retrieve_batch([f[1] for f in group], [f[2] for f in group], k)
            for f, r in zip(group, out):
                found.setdefault(f[0], []).append(r)
        results: list[Outputs | SerendipError] = []
        for ri, d in enumerate(decoded):
            if isinstance(d, SerendipError):
                results.append(d)
                continue
            rows = found.get(ri, [])
            results.append({"ITEM_IDS": bytes_rows([[i for i, _ in r] for r in rows]),
                            "SCORES": pad_rows([[s for _, s in r] for r in rows], np.nan,
                                               np.float32)})
        return results
