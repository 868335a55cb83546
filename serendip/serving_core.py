"""Serving logic shared by every server: tensor contracts, input checks, the model handlers and
the recommend flow. No platform imports — Triton's Python backend (a numpy<2 venv), the KServe
fallback and the KServe transformer all call this module, so they answer identically.

Tensor contracts (v2 protocol; every input and output has a leading batch dimension, as Triton
requires with ``max_batch_size > 0``):

* ``mllm``      TITLE, CONTEXT_DESCRIPTION?, THUMBNAIL?, FRAMES?, K?, CANDIDATES? →
                CLUSTER_IDS, DESCRIPTIONS, SCORES, MODEL_VERSION (CANDIDATES: the only
                cluster ids the answer may name — the context's serendipitous candidates,
                ranked by likelihood; the recommend flow always sends them when it knows them)
* ``retriever`` HISTORY?, CLUSTER_ID, K? → ITEM_IDS, SCORES (an empty CLUSTER_ID: the whole
                catalogue, the unrestricted exploitation retriever)
* ``recommend`` ITEM_ID, HISTORY?, K?, SHARE? → ITEM_IDS, SCORES, CLUSTER_ID, DESCRIPTION,
                SOURCE, ITEM_SOURCES

``recommend`` answers the **blended slate** of the paper's live experiment (§4; issue 15): K
items mixing the unrestricted retriever's top items (ITEM_SOURCES ``exploit``) with the
retriever's top items inside the context's serendipitous cluster (``serendipitous``),
``ceil(SHARE · K)`` of them serendipitous (:mod:`serendip.blend`: positions, no duplicates). SHARE
(FP32 in [0, 1]) defaults to the server's setting (``SERENDIP_SERENDIPITOUS_SHARE``, else 0.2);
SHARE = 1 is the cluster-only list. SOURCE says where the *cluster* came from (feast | table |
cache | mllm); SCORES are each item's score in its own list.

Images (THUMBNAIL, FRAMES) are encoded PNG/JPEG bytes or ``synth:`` URIs; an empty element is
padding. File paths are refused: a client must never make the server read its disk.

Errors are :class:`SerendipError` whose ``field`` is the input name; servers turn them into
HTTP 400 / gRPC INVALID_ARGUMENT and keep serving — only for the client's own mistakes. A
fault of the server's own data, stores or models is a :class:`ServerFault` (HTTP 500, gRPC
INTERNAL / Triton INTERNAL), never a 400: data the server builds a request from (a catalogue
item's title and media, a cluster id read from Feast) is fitted to the server's own limits
before it reaches the checks written for clients (:func:`mllm_request`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serendip.errors import SerendipError

log = logging.getLogger("serendip.serving")


class ServerFault(SerendipError):
    """A server-side fault (its feature store, catalogue or models disagree or are down):
    answered as HTTP 500 / gRPC INTERNAL, never as the client's mistake."""


class UnknownCluster(SerendipError):
    """The served retriever does not know a cluster id. A client sending it to ``retriever``
    gets a 400; inside ``recommend`` (a cluster read from Feast) the next cluster is tried."""


def remote_error(model: str, message: str) -> SerendipError:
    """An INVALID_ARG answer of a served model (its message names the input) → the matching
    error: :class:`UnknownCluster` for the retriever's unknown-cluster answer."""
    if "CLUSTER_ID: unknown cluster" in message:
        return UnknownCluster(f"{model}: {message}", field="CLUSTER_ID")
    return SerendipError(f"{model}: {message}")

# ------------------------------------------------------------------ limits
MAX_K_MLLM = 10            # beams of constrained decoding; more is slow and meaningless
MAX_K_ITEMS = 200          # items per retriever / recommend answer
MAX_FRAMES = 32            # images per row
MAX_HISTORY = 1000         # history ids per row (the retriever attends to the last max_len)
MAX_ID_BYTES = 256         # one item or cluster id
MAX_TEXT_BYTES = 4096      # a title or description


# ------------------------------------------------------------------ tensor contracts
@dataclass(frozen=True)
class TensorSpec:
    """One v2 tensor: name, datatype and dims *without* the batch dimension (-1: variable)."""

    name: str
    datatype: str                  # BYTES | INT32 | FP32
    dims: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)


MLLM = ModelSpec(
    "mllm",
    inputs=(TensorSpec("TITLE", "BYTES", (1,)),
            TensorSpec("CONTEXT_DESCRIPTION", "BYTES", (1,), optional=True),
            TensorSpec("THUMBNAIL", "BYTES", (1,), optional=True),
            TensorSpec("FRAMES", "BYTES", (-1,), optional=True),
            TensorSpec("K", "INT32", (1,), optional=True),
            TensorSpec("CANDIDATES", "BYTES", (-1,), optional=True)),
    outputs=(TensorSpec("CLUSTER_IDS", "BYTES", (-1,)),
             TensorSpec("DESCRIPTIONS", "BYTES", (-1,)),
             TensorSpec("SCORES", "FP32", (-1,)),
             TensorSpec("MODEL_VERSION", "BYTES", (1,))),
    max_batch_size=8)

RETRIEVER = ModelSpec(
    "retriever",
    inputs=(TensorSpec("HISTORY", "BYTES", (-1,), optional=True),
            TensorSpec("CLUSTER_ID", "BYTES", (1,)),
            TensorSpec("K", "INT32", (1,), optional=True)),
    outputs=(TensorSpec("ITEM_IDS", "BYTES", (-1,)),
             TensorSpec("SCORES", "FP32", (-1,))),
    max_batch_size=64)

RECOMMEND = ModelSpec(
    "recommend",
    inputs=(TensorSpec("ITEM_ID", "BYTES", (1,)),
            TensorSpec("HISTORY", "BYTES", (-1,), optional=True),
            TensorSpec("K", "INT32", (1,), optional=True),
            TensorSpec("SHARE", "FP32", (1,), optional=True)),
    outputs=(TensorSpec("ITEM_IDS", "BYTES", (-1,)),
             TensorSpec("SCORES", "FP32", (-1,)),
             TensorSpec("CLUSTER_ID", "BYTES", (1,)),
             TensorSpec("DESCRIPTION", "BYTES", (1,)),
             TensorSpec("SOURCE", "BYTES", (1,)),
             TensorSpec("ITEM_SOURCES", "BYTES", (-1,))),
    max_batch_size=64)

SPECS: dict[str, ModelSpec] = {s.name: s for s in (MLLM, RETRIEVER, RECOMMEND)}
NUMPY_DTYPES = {"BYTES": np.object_, "INT32": np.int32, "FP32": np.float32}
_TRITON_TYPES = {"BYTES": "TYPE_STRING", "INT32": "TYPE_INT32", "FP32": "TYPE_FP32"}


def config_pbtxt_io(spec: ModelSpec) -> str:
    """The ``input``/``output`` blocks of a Triton ``config.pbtxt`` for ``spec`` (a test keeps
    the committed configs equal to the contracts above)."""
    def block(kind: str, tensors: Sequence[TensorSpec]) -> str:
        rows = []
        for t in tensors:
            opt = " optional: true" if t.optional else ""
            if kind == "input" and -1 in t.dims:   # python backend takes requests one by one
                opt += " allow_ragged_batch: true"
            dims = ", ".join(str(d) for d in t.dims)
            rows.append(f'  {{ name: "{t.name}" data_type: {_TRITON_TYPES[t.datatype]} '
                        f"dims: [ {dims} ]{opt} }}")
        return f"{kind} [\n" + ",\n".join(rows) + "\n]"
    return block("input", spec.inputs) + "\n" + block("output", spec.outputs) + "\n"


def check_tensors(spec: ModelSpec, tensors: Mapping[str, tuple[str, Sequence[int]]]) -> int:
    """Check names, datatypes and shapes as Triton does; return the batch size.

    ``tensors`` maps input name → (datatype, shape). Used by the KServe servers, which (unlike
    Triton) do not check requests against a model config.
    """
    batch = None
    for name, (datatype, shape) in tensors.items():
        t = spec.input(name)
        if t is None:
            raise SerendipError(f"unexpected input for model '{spec.name}'", field=name,
                                fix="send only " + ", ".join(x.name for x in spec.inputs))
        if datatype != t.datatype:
            raise SerendipError(f"data-type is '{datatype}', but model '{spec.name}' expects "
                                f"'{t.datatype}'", field=name, fix=f"send {name} as {t.datatype}")
        shape = [int(s) for s in shape]
        want = [-1, *t.dims]
        if len(shape) != len(want) or any(w != -1 and s != w for s, w in zip(shape, want)):
            raise SerendipError(f"unexpected shape {shape}, expected {want} (a leading batch "
                                "dimension, then the tensor)", field=name,
                                fix=f"reshape {name} to {[1, *t.dims]} for one request")
        if not 1 <= shape[0] <= spec.max_batch_size:
            raise SerendipError(f"batch size {shape[0]} outside [1, {spec.max_batch_size}]",
                                field=name, fix=f"send at most {spec.max_batch_size} rows")
        if batch is not None and shape[0] != batch:
            raise SerendipError(f"batch size {shape[0]} differs from the other inputs ({batch})",
                                field=name, fix="give every input the same number of rows")
        batch = shape[0]
    for t in spec.inputs:
        if not t.optional and t.name not in tensors:
            raise SerendipError(f"required input is missing for model '{spec.name}'",
                                field=t.name, fix=f"send {t.name} ({t.datatype} {[1, *t.dims]})")
    return int(batch or 0)


# ------------------------------------------------------------------ decoding helpers
def _as_bytes(x: Any) -> bytes:
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    if isinstance(x, np.bytes_):
        return bytes(x)
    return str(x).encode()


def _text(x: Any, name: str, limit: int, allow_empty: bool = False) -> str:
    b = _as_bytes(x)
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
    vals = [v for v in np.asarray(row, dtype=object).reshape(-1) if len(_as_bytes(v))]
    if len(vals) > limit:
        raise SerendipError(f"has {len(vals)} {what}, over {limit}", field=name, fix=fix)
    return vals


def _ids(row: np.ndarray | None, name: str, limit: int) -> list[str]:
    return [_text(v, name, MAX_ID_BYTES) for v in _elements(
        row, name, limit, "ids", f"send the most recent {limit} ids")]


def _k(row: np.ndarray | None, default: int, limit: int) -> int:
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

    b = _as_bytes(data)
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


def _images(row: np.ndarray | None, name: str) -> list:
    vals = _elements(row, name, MAX_FRAMES, "images", f"send at most {MAX_FRAMES} frames")
    return [decode_image(v, f"{name}[{i}]") for i, v in enumerate(vals)]


def _rows(arrays: Mapping[str, np.ndarray], name: str, batch: int) -> list:
    a = arrays.get(name)
    return [None] * batch if a is None else [a[i] for i in range(batch)]


def _batch_of(arrays: Mapping[str, np.ndarray], spec: ModelSpec) -> int:
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


def _bytes_rows(rows: Sequence[Sequence[str]]) -> np.ndarray:
    return pad_rows([[s.encode() for s in r] for r in rows], b"", np.object_)


def _column(values: Sequence[str]) -> np.ndarray:
    return np.array([[v.encode()] for v in values], dtype=np.object_).reshape(len(values), 1)


Outputs = dict[str, np.ndarray]


# ------------------------------------------------------------------ model handlers
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
        ids = [c for c in _ids(row, "CANDIDATES", MAX_K_ITEMS) if c]
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
        batch = _batch_of(arrays, self.spec)
        rows, ks = [], []
        for title, ctx, thumb, frames, k, cand in zip(*(_rows(arrays, n, batch) for n in (
                "TITLE", "CONTEXT_DESCRIPTION", "THUMBNAIL", "FRAMES", "K", "CANDIDATES"))):
            x = {"title": _text(np.asarray(title).reshape(-1)[0], "TITLE", MAX_TEXT_BYTES,
                                allow_empty=True),
                 "context_description": "" if ctx is None else _text(
                     np.asarray(ctx).reshape(-1)[0], "CONTEXT_DESCRIPTION", MAX_TEXT_BYTES,
                     allow_empty=True)}
            thumbs = _images(thumb, "THUMBNAIL")
            x["thumbnail"] = thumbs[0] if thumbs else None
            x["frames"] = _images(frames, "FRAMES") or None
            if self.predictor.prompt_config.uses_images:
                if self.predictor.prompt_config.use_thumbnail and x["thumbnail"] is None:
                    raise SerendipError("is required by this model (prompt uses the thumbnail)",
                                        field="THUMBNAIL", fix="send the item's thumbnail")
                if not self.predictor.prompt_config.use_thumbnail and not x["frames"]:
                    raise SerendipError("are required by this model (prompt uses frames)",
                                        field="FRAMES", fix="send the item's frames")
            x["candidates"] = self._candidates(cand)
            rows.append(x)
            ks.append(_k(k, 1, self.max_k))
        return rows, ks

    def infer(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[Outputs | SerendipError]:
        """Answer several requests with as few batched generate calls as possible (one per
        distinct k); a bad request gets its own error and never fails the others."""
        decoded: list[tuple[list[dict], list[int]] | SerendipError] = []
        for arrays in requests:
            try:
                decoded.append(self._decode(arrays))
            except SerendipError as e:
                decoded.append(e)
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
                "CLUSTER_IDS": _bytes_rows([[p.cluster_id or "" for p in r] for r in rows]),
                "DESCRIPTIONS": _bytes_rows([[p.description for p in r] for r in rows]),
                "SCORES": pad_rows([[p.score for p in r] for r in rows], np.nan, np.float32),
                "MODEL_VERSION": _column([self.model_version] * len(rows))})
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
        batch = _batch_of(arrays, self.spec)
        hist, cids, ks = [], [], []
        for h, c, k in zip(*(_rows(arrays, n, batch) for n in ("HISTORY", "CLUSTER_ID", "K"))):
            cid = _text(np.asarray(c).reshape(-1)[0], "CLUSTER_ID", MAX_ID_BYTES,
                        allow_empty=True) or None          # empty: the whole catalogue
            if cid is not None and not self.retriever.has_cluster(cid):
                raise UnknownCluster(f"unknown cluster {cid!r}", field="CLUSTER_ID",
                                    fix="use a cluster id of the served cluster tree "
                                        "(path ids like '3.1.0')")
            hist.append(_ids(h, "HISTORY", MAX_HISTORY))
            cids.append(cid)
            ks.append(_k(k, 10, MAX_K_ITEMS))
        return hist, cids, ks

    def infer(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[Outputs | SerendipError]:
        decoded = []
        for arrays in requests:
            try:
                decoded.append(self._decode(arrays))
            except SerendipError as e:
                decoded.append(e)
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
            results.append({"ITEM_IDS": _bytes_rows([[i for i, _ in r] for r in rows]),
                            "SCORES": pad_rows([[s for _, s in r] for r in rows], np.nan,
                                               np.float32)})
        return results


# ------------------------------------------------------------------ micro-batching
class MicroBatcher:
    """Triton's dynamic batching for the KServe fallback: requests arriving within
    ``max_delay_s`` of each other (up to ``max_batch``) go to ``handler.infer`` together, in
    one worker thread (torch is single-threaded here), so the event loop keeps accepting."""

    def __init__(self, handler, max_batch: int = 8, max_delay_s: float = 0.002):
        from concurrent.futures import ThreadPoolExecutor

        self.handler, self.max_batch, self.max_delay_s = handler, max_batch, max_delay_s
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=handler.spec.name)

    async def submit(self, arrays: Mapping[str, np.ndarray]) -> Outputs | SerendipError:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.ensure_future(self._run())
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((arrays, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_delay_s
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            try:
                results = await loop.run_in_executor(
                    self._pool, self.handler.infer, [a for a, _ in batch])
            except Exception as e:  # noqa: BLE001 — every waiter gets the error
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), res in zip(batch, results):
                if not fut.done():
                    fut.set_result(res)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)


# ------------------------------------------------------------------ recommend
@dataclass(frozen=True)
class ClusterChoice:
    """The context item's serendipitous cluster, and where it came from."""

    cluster_id: str
    description: str
    source: str                  # feast | table | cache | mllm
    # the row's next clusters (id, description), best first: tried when the served retriever
    # does not know ``cluster_id`` (tree rebuilt, retriever not re-exported yet)
    alternatives: tuple[tuple[str, str], ...] = ()

    def candidates(self) -> list[tuple[str, str]]:
        return [(self.cluster_id, self.description), *self.alternatives]


@dataclass
class Recommendation:
    item_ids: list[str]
    scores: list[float]
    cluster_id: str
    description: str
    source: str                              # where the cluster came from
    item_sources: list[str] = field(default_factory=list)   # exploit | serendipitous per item


SHARE_ENV = "SERENDIP_SERENDIPITOUS_SHARE"


def default_share() -> float:
    """The server's serendipitous share of the blended slate: ``SERENDIP_SERENDIPITOUS_SHARE``
    (a number in [0, 1]), else 0.2 (2 of 10 items).

    Raises:
        ConfigError: the variable is not a number in [0, 1]."""
    import os

    from serendip.blend import BlendConfig
    from serendip.errors import ConfigError

    raw = os.environ.get(SHARE_ENV, "").strip()
    if not raw:
        return BlendConfig().serendipitous_share
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    try:
        return BlendConfig(1, value).serendipitous_share
    except ConfigError:
        raise ConfigError(f"{SHARE_ENV}={raw!r} is not a number in [0, 1]", field=SHARE_ENV,
                          fix="set a share such as 0.2 (2 of 10 items serendipitous)") from None


def _share(row: np.ndarray | None, default: float) -> float:
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


class ClusterCache:
    """In-process item → cluster cache (LRU + TTL): one Feast read per context item per TTL,
    not per request (PEERS.md: per-request feature reads dominated serving latency). The TTL
    bounds staleness after a re-scoring run."""

    def __init__(self, size: int = 100_000, ttl_s: float = 300.0):
        self.size, self.ttl_s = size, ttl_s
        self._d: OrderedDict[str, tuple[float, ClusterChoice]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, item_id: str) -> ClusterChoice | None:
        e = self._d.get(item_id)
        if e is None or time.monotonic() - e[0] > self.ttl_s:
            self.misses += 1
            if e is not None:
                del self._d[item_id]
            return None
        self._d.move_to_end(item_id)
        self.hits += 1
        return e[1]

    def put(self, item_id: str, choice: ClusterChoice) -> None:
        self._d[item_id] = (time.monotonic(), choice)
        self._d.move_to_end(item_id)
        while len(self._d) > self.size:
            self._d.popitem(last=False)


Lookup = Callable[[str], ClusterChoice | None]
ItemInfo = Callable[[str], dict | None]
Predict = Callable[[dict], Awaitable[ClusterChoice]]
Retrieve = Callable[[list[str], str, int], Awaitable[list[tuple[str, float]]]]


@dataclass
class RecommendFlow:
    """recommend(context item, history, k) = serendipitous cluster of the context item (cache →
    feature store → the MLLM for items not scored yet) → retriever top-k inside that cluster.

    The lookups are plain callables and the model calls are coroutines, so the same flow runs
    in the KServe transformer (calling Triton over gRPC) and in the KServe fallback (calling
    the handlers in process).
    """

    lookup: Lookup                           # feature store read; None when not scored
    item_info: ItemInfo                      # title/thumbnail/frames of a known item, or None
    predict: Predict                         # the mllm, for items the feature store lacks
    retrieve: Retrieve                       # the retriever restricted to a cluster
    cache: ClusterCache = field(default_factory=ClusterCache)
    on_phase: Callable[[str, float], None] | None = None   # (phase, seconds) per call
    on_store_error: Callable[[], None] | None = None       # a feature-store read failed
    serendipitous_share: float | None = None   # blended slate default (None: default_share())
    _inflight: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        from serendip.blend import BlendConfig

        if self.serendipitous_share is None:
            self.serendipitous_share = default_share()
        BlendConfig(1, self.serendipitous_share)              # validated (ConfigError)

    async def cluster_of(self, item_id: str) -> ClusterChoice:
        hit = self.cache.get(item_id)
        if hit is not None:
            return ClusterChoice(hit.cluster_id, hit.description, "cache", hit.alternatives)
        if item_id in self._inflight:            # one MLLM call per item, however many ask
            return await asyncio.shield(self._inflight[item_id])
        t0 = time.perf_counter()
        store_down = None
        try:
            choice = self.lookup(item_id)
        except ServerFault as e:                 # the online store is down: the MLLM answers
            choice, store_down = None, e
            log.warning("cluster lookup failed for item %r (%s); asking the MLLM", item_id, e)
            if self.on_store_error is not None:
                self.on_store_error()
        self.observe("lookup", time.perf_counter() - t0)
        if choice is None:
            choice = await self._predict_for(item_id, store_down)
        if store_down is None:                   # not cached while the store is down
            self.cache.put(item_id, choice)
        return choice

    async def _predict_for(self, item_id: str, store_down: Exception | None = None
                           ) -> ClusterChoice:
        info = self.item_info(item_id)
        if info is None:
            if store_down is not None:
                raise ServerFault(f"item {item_id!r}: the feature store is unavailable "
                                  f"({store_down}) and the item is not in the catalogue",
                                  fix="retry when the online store is back")
            raise SerendipError(f"unknown item {item_id!r} (not scored, not in the items "
                                "table)", field="ITEM_ID",
                                fix="send an item id of the catalogue, or add the item and "
                                    "run `serendip score`")
        if info.get("candidates") is not None and not info["candidates"]:
            raise ServerFault(f"item {item_id!r} has no serendipitous candidate cluster (its "
                              "cluster is alone under its level-(l-delta) ancestor)",
                              fix="re-cluster with more branching or serve a larger delta")
        if item_id in self._inflight:
            return await asyncio.shield(self._inflight[item_id])
        fut = asyncio.ensure_future(self._timed_predict(item_id, info))
        self._inflight[item_id] = fut
        try:
            return await fut
        finally:
            self._inflight.pop(item_id, None)

    async def _timed_predict(self, item_id: str, info: dict) -> ClusterChoice:
        t0 = time.perf_counter()
        try:
            return await self.predict(info)
        except ServerFault:
            raise
        except SerendipError as e:               # the request was built from server data
            raise ServerFault(f"the MLLM refused catalogue item {item_id!r}: {e}") from None
        finally:
            self.observe("mllm", time.perf_counter() - t0)

    async def _retrieve(self, history: list[str], cluster_id: str, k: int):
        t0 = time.perf_counter()
        try:
            return await self.retrieve(history, cluster_id, k)
        finally:
            self.observe("retriever", time.perf_counter() - t0)

    async def recommend(self, item_id: str, history: list[str], k: int,
                        share: float | None = None) -> Recommendation:
        """The blended slate of ``k`` items (:mod:`serendip.blend`): ``ceil(share · k)`` from
        the context's serendipitous cluster (:meth:`cluster_items`), the rest the unrestricted
        retriever's top items (the context item itself left out); each labelled in
        ``item_sources``. ``share`` defaults to the flow's ``serendipitous_share``; 1 gives the
        cluster-only list.

        Raises:
            SerendipError: the client's own mistake (unknown item; HTTP 400).
            ServerFault: the server's stores and models disagree or fail (HTTP 500).
        """
        from serendip.blend import EXPLOIT, BlendConfig, blend_slate

        cfg = BlendConfig(k, self.serendipitous_share if share is None else share)
        found: list[tuple[str, float]] | None = None
        if cfg.n_serendipitous < k:      # both retriever calls at once: the slate needs both
            choice = await self.cluster_of(item_id)          # an unknown item fails here
            got = await asyncio.gather(self.cluster_items(item_id, history, k, choice),
                                       self._unrestricted(item_id, history, k),
                                       return_exceptions=True)
            for g in got:                # the cluster's error first (e.g. an unknown item)
                if isinstance(g, BaseException):
                    raise g
            rec, found = got
        else:
            rec = await self.cluster_items(item_id, history, k)
        if found is None and len(rec.item_ids) < k:    # a short cluster list: fill it
            found = await self._unrestricted(item_id, history, k)
        exploit = found or []
        ser_score = dict(zip(rec.item_ids, rec.scores))
        exp_score = dict(exploit)
        slate = blend_slate([i for i, _ in exploit], rec.item_ids, cfg)
        rec.item_ids = [s.item_id for s in slate]
        rec.scores = [exp_score[s.item_id] if s.source == EXPLOIT else ser_score[s.item_id]
                      for s in slate]
        rec.item_sources = [s.source for s in slate]
        return rec

    async def _unrestricted(self, item_id: str, history: list[str], k: int
                            ) -> list[tuple[str, float]]:
        """The exploitation list: the retriever's top-k over the whole catalogue, the context
        item itself left out (one more asked for)."""
        try:
            found = await self._retrieve(history, None, min(k + 1, MAX_K_ITEMS))
        except ServerFault:
            raise
        except SerendipError as e:           # client inputs were checked before: ours
            raise ServerFault(f"the unrestricted retriever refused item {item_id!r}'s "
                              f"request: {e}") from None
        return [(i, sc) for i, sc in found if i != item_id][:k]

    async def cluster_items(self, item_id: str, history: list[str], k: int,
                            choice: ClusterChoice | None = None) -> Recommendation:
        """Top-k of the item's first cluster the served retriever knows: the feature row's
        clusters in order, then the MLLM's; an unknown cluster is logged (the feature store
        and the served retriever disagree). Nothing known → :class:`ServerFault` (a 5xx).
        ``choice``: the item's cluster choice when the caller already looked it up.

        Raises:
            SerendipError: the client's own mistake (unknown item; HTTP 400).
            ServerFault: the server's stores and models disagree or fail (HTTP 500).
        """
        choice = choice or await self.cluster_of(item_id)
        tried: list[str] = []
        for attempt in range(2):
            for cid, desc in choice.candidates():
                if cid in tried:
                    continue
                tried.append(cid)
                try:
                    if len(cid.encode()) > MAX_ID_BYTES:   # no served cluster has such an id
                        raise UnknownCluster(f"cluster id of {len(cid.encode())} bytes")
                    found = await self._retrieve(history, cid, k)
                except UnknownCluster:
                    log.warning("item %r: cluster %r (from %s) is unknown to the served "
                                "retriever (%s and retriever disagree); trying the next",
                                item_id, cid, choice.source,
                                "MLLM" if choice.source == "mllm" else "feature store")
                    continue
                except ServerFault:
                    raise
                except SerendipError as e:       # client inputs were checked before: ours
                    raise ServerFault(f"the retriever refused cluster {cid!r} of item "
                                      f"{item_id!r}: {e}") from None
                if attempt or cid != choice.cluster_id:
                    self.cache.put(item_id, ClusterChoice(cid, desc, choice.source))
                return Recommendation([i for i, _ in found], [s for _, s in found], cid, desc,
                                      choice.source if not attempt else "mllm",
                                      ["serendipitous"] * len(found))
            if attempt or choice.source == "mllm" or self.item_info(item_id) is None:
                break
            choice = await self._predict_for(item_id)
        raise ServerFault(f"no cluster of item {item_id!r} is known to the served retriever "
                          f"(tried {', '.join(tried)})",
                          fix="re-export the retriever trained on the current cluster tree "
                              "(`serendip export`), then re-score")

    def observe(self, phase: str, seconds: float) -> None:
        """Latency of one phase (lookup | mllm | retriever); a metrics hook (no-op here)."""
        if self.on_phase is not None:
            self.on_phase(phase, seconds)

    async def infer(self, arrays: Mapping[str, np.ndarray]) -> Outputs:
        """One v2 request (B rows) → the RECOMMEND outputs; errors name the input."""
        batch = _batch_of(arrays, RECOMMEND)
        rows = []
        for item, h, k, share in zip(*(_rows(arrays, n, batch)
                                       for n in ("ITEM_ID", "HISTORY", "K", "SHARE"))):
            rows.append((_text(np.asarray(item).reshape(-1)[0], "ITEM_ID", MAX_ID_BYTES),
                         _ids(h, "HISTORY", MAX_HISTORY), _k(k, 10, MAX_K_ITEMS),
                         _share(share, self.serendipitous_share)))
        recs = await asyncio.gather(*(self.recommend(*r) for r in rows))
        return recommend_outputs(recs)


def recommend_outputs(recs: Sequence[Recommendation]) -> Outputs:
    return {"ITEM_IDS": _bytes_rows([r.item_ids for r in recs]),
            "SCORES": pad_rows([r.scores for r in recs], np.nan, np.float32),
            "CLUSTER_ID": _column([r.cluster_id for r in recs]),
            "DESCRIPTION": _column([r.description for r in recs]),
            "SOURCE": _column([r.source for r in recs]),
            "ITEM_SOURCES": _bytes_rows([r.item_sources for r in recs])}


def top_choice(cluster_ids: Sequence, descriptions: Sequence, source: str) -> ClusterChoice | None:
    """The best-scored cluster of a feature-store / table row (lists ordered best first), with
    the row's other clusters as alternatives."""
    descs = list(descriptions or [])
    pairs = [(str(c), str(descs[j]) if j < len(descs) and descs[j] is not None else "")
             for j, c in enumerate(cluster_ids or []) if c]
    if not pairs:
        return None
    return ClusterChoice(pairs[0][0], pairs[0][1], source, tuple(pairs[1:]))


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
    ids = [_as_bytes(x).decode() for x in np.asarray(outputs["ITEM_IDS"], dtype=object)[0]]
    scores = np.asarray(outputs["SCORES"], dtype=np.float32)[0]
    return [(i, float(s)) for i, s in zip(ids, scores) if i]


def first_row_choice(outputs: Mapping[str, np.ndarray], source: str = "mllm") -> ClusterChoice:
    cid = [_as_bytes(x).decode() for x in np.asarray(outputs["CLUSTER_IDS"], dtype=object)[0]]
    desc = [_as_bytes(x).decode() for x in np.asarray(outputs["DESCRIPTIONS"], dtype=object)[0]]
    choice = top_choice(cid, desc, source)
    if choice is None:
        raise SerendipError("the mllm returned no cluster", field="ITEM_ID",
                            fix="check the served mllm model")
    return choice


# ------------------------------------------------------------------ Triton Python backend glue
def triton_execute(handler, requests: Sequence, pb_utils) -> list:
    """``TritonPythonModel.execute`` for a handler: tensors in, one response per request.

    ``pb_utils`` is Triton's ``triton_python_backend_utils`` module, passed in so this module
    stays importable (and testable) outside Triton. A :class:`SerendipError` becomes an
    INVALID_ARG response (HTTP 400 / gRPC INVALID_ARGUMENT) for that request only; an
    unexpected exception fails the batch with INTERNAL, and the model keeps serving.
    """
    arrays = []
    for r in requests:
        a = {}
        for t in handler.spec.inputs:
            x = pb_utils.get_input_tensor_by_name(r, t.name)
            if x is not None:
                a[t.name] = x.as_numpy()
        arrays.append(a)
    try:
        results = handler.infer(arrays)
    except ServerFault as e:
        err = pb_utils.TritonError(str(e))
        return [pb_utils.InferenceResponse(error=err) for _ in requests]
    except SerendipError as e:
        results = [e] * len(requests)
    except Exception as e:  # noqa: BLE001 — answered as INTERNAL, the server lives on
        err = pb_utils.TritonError(f"{type(e).__name__}: {e}")
        return [pb_utils.InferenceResponse(error=err) for _ in requests]
    out = []
    for res in results:
        if isinstance(res, ServerFault):
            out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(res))))
        elif isinstance(res, SerendipError):
            out.append(pb_utils.InferenceResponse(
                error=pb_utils.TritonError(str(res), pb_utils.TritonError.INVALID_ARG)))
        else:
            out.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, np.ascontiguousarray(a)) for name, a in res.items()]))
    return out


def model_parameters(model_config: Mapping) -> dict[str, str]:
    """``parameters`` of a Triton model config (as passed to ``initialize``) → plain dict."""
    return {k: v.get("string_value", "") for k, v in (model_config.get("parameters") or {}).items()}
