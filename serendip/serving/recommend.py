"""The recommend flow: the **blended slate** of the paper's live experiment (§4; issue 15).

``recommend`` answers K items mixing the unrestricted retriever's top items (ITEM_SOURCES
``exploit``) with the retriever's top items inside the context's serendipitous cluster
(``serendipitous``), ``ceil(SHARE · K)`` of them serendipitous (:mod:`serendip.blend`:
positions, no duplicates). SHARE (FP32 in [0, 1]) defaults to the server's setting
(``SERENDIP_SERENDIPITOUS_SHARE``, else 0.2); SHARE = 1 is the cluster-only list. SOURCE says
where the *cluster* came from (feast | table | cache | mllm); SCORES are each item's score in
its own list.

The same flow runs in the KServe transformer (models over gRPC), the KServe fallback (handlers
in process) and Triton's BLS ``recommend`` model. A fault of the server's own data, stores or
models is a :class:`~serendip.serving.errors.ServerFault` (HTTP 500), never a 400.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from serendip.errors import SerendipError
from serendip.serving.cluster_choice import ClusterCache, ClusterChoice
from serendip.serving.codec import (
    Outputs,
    batch_size,
    bytes_column,
    bytes_rows,
    decode_ids,
    decode_k,
    decode_share,
    decode_text,
    input_rows,
    pad_rows,
)
from serendip.serving.contracts import MAX_HISTORY, MAX_ID_BYTES, MAX_K_ITEMS, RECOMMEND
from serendip.serving.errors import ServerFault, UnknownCluster

log = logging.getLogger("serendip.serving")


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
        batch = batch_size(arrays, RECOMMEND)
        rows = []
        for item, h, k, share in zip(*(input_rows(arrays, n, batch)
                                       for n in ("ITEM_ID", "HISTORY", "K", "SHARE"))):
            rows.append((decode_text(np.asarray(item).reshape(-1)[0], "ITEM_ID", MAX_ID_BYTES),
                         decode_ids(h, "HISTORY", MAX_HISTORY), decode_k(k, 10, MAX_K_ITEMS),
                         decode_share(share, self.serendipitous_share)))
        recs = await asyncio.gather(*(self.recommend(*r) for r in rows))
        return recommend_outputs(recs)


def recommend_outputs(recs: Sequence[Recommendation]) -> Outputs:
    return {"ITEM_IDS": bytes_rows([r.item_ids for r in recs]),
            "SCORES": pad_rows([r.scores for r in recs], np.nan, np.float32),
            "CLUSTER_ID": bytes_column([r.cluster_id for r in recs]),
            "DESCRIPTION": bytes_column([r.description for r in recs]),
            "SOURCE": bytes_column([r.source for r in recs]),
            "ITEM_SOURCES": bytes_rows([r.item_sources for r in recs])}
