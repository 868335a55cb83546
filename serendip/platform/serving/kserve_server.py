"""KServe side of serving (v2 protocol over REST and gRPC):

* :class:`RecommendTransformer` — the ``recommend`` model: a KServe *transformer* in the
  production layout (``spec.transformer`` in front of the Triton predictor). It finds the
  context item's serendipitous cluster (in-process cache → Feast → Triton ``mllm`` for items not
  scored yet) and asks Triton's ``retriever`` for the top-k inside that cluster, over gRPC.
* :class:`HandlerModel` — the KServe *fallback* predictor: ``mllm`` / ``retriever`` served by
  KServe itself when no Triton is available, with the same tensors, the same checks and
  Triton-style dynamic batching (:class:`~serendip.serving.batching.MicroBatcher`).
* :class:`LoopbackModelServer` — kserve 0.21's ``ModelServer`` hard-codes ``0.0.0.0`` (REST)
  and ``[::]`` (gRPC); this subclass binds a given host (127.0.0.1 locally) instead.

Never import ``tritonclient.grpc`` here: with kserve in the same process its protobufs clash
kserve's own async gRPC client talks to Triton.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import Mapping

import numpy as np

from serendip.errors import SerendipError
from serendip.serving.batching import MicroBatcher
from serendip.serving.cluster_choice import ClusterCache, ClusterChoice
from serendip.serving.contracts import (
    MLLM,
    NUMPY_DTYPES,
    RECOMMEND,
    RETRIEVER,
    ModelSpec,
    check_tensors,
)
from serendip.serving.errors import ServerFault, remote_error
from serendip.serving.infer_requests import (
    first_row_choice,
    first_row_items,
    mllm_request,
    retriever_request,
)
from serendip.serving.recommend import RecommendFlow


def import_kserve():
    """``import kserve`` without letting it parse *our* command line (it reads sys.argv at
    import time and would pick up e.g. ``--workers``)."""
    if "kserve" in sys.modules:
        return sys.modules["kserve"]
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        import kserve
        import kserve.model_server  # noqa: F401 — the import that parses argv
    finally:
        sys.argv = argv
    return kserve


kserve = import_kserve()
from kserve.errors import InferenceError, InvalidInput  # noqa: E402
from kserve.protocol.infer_type import (  # noqa: E402
    InferInput,
    InferOutput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)


def _from_bytes_keep_binary(cls, req_bytes: bytes, json_length: int, model_name: str):
    """kserve 0.21's REST decoder turns binary BYTES tensors into JSON strings, so any
    non-UTF-8 element (a PNG, a JPEG) fails with a 500. Same parsing, raw bytes kept; a
    malformed request is a 400."""
    import orjson

    try:
        d = orjson.loads(req_bytes[:json_length])
        start, inputs = json_length, []
        for spec in d["inputs"]:
            params = spec.get("parameters")
            i = InferInput(name=spec["name"], shape=list(spec["shape"]),
                           datatype=spec["datatype"], parameters=params)
            if spec.get("data") is not None:
                i.data = spec["data"]
            elif params and params.get("binary_data_size") is not None:
                end = start + int(params["binary_data_size"])
                if end > len(req_bytes):
                    raise ValueError(f"binary data of input '{i.name}' is truncated")
                i._raw_data = req_bytes[start:end]
                start = end
            else:
                raise ValueError(f"input '{i.name}' has neither 'data' nor binary data")
            inputs.append(i)
        outputs = [RequestedOutput(name=o["name"], parameters=o.get("parameters"))
                   for o in d.get("outputs") or []] or None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise InvalidInput(f"malformed v2 request: {e}") from None
    return cls(model_name=model_name, request_id=d.get("id"), parameters=d.get("parameters"),
               infer_inputs=inputs, request_outputs=outputs)


InferRequest.from_bytes = classmethod(_from_bytes_keep_binary)


class ServingFault(InferenceError):
    """A :class:`~serendip.serving.errors.ServerFault` on its way out: KServe answers
    ``InferenceError`` with HTTP 500 and its message; over gRPC kserve 0.21 would say
    INVALID_ARGUMENT, so :class:`_StatusInterceptor` answers INTERNAL instead."""


# ------------------------------------------------------------------ tensors <-> kserve
def request_arrays(spec: ModelSpec, payload) -> dict[str, np.ndarray]:
    """A v2 request → input arrays, checked against ``spec`` (names, dtypes, shapes)."""
    inputs = getattr(payload, "inputs", None)
    if not isinstance(inputs, list):
        raise InvalidInput("expected a v2 inference request with an 'inputs' list")
    try:
        check_tensors(spec, {i.name: (i.datatype, list(i.shape)) for i in inputs})
        arrays = {}
        for i in inputs:
            try:
                a = i.as_numpy()
            except Exception as e:  # noqa: BLE001 — malformed tensor data
                raise SerendipError(f"cannot be read as {i.datatype} {list(i.shape)} ({e})",
                                    field=i.name, fix="send data matching the shape") from None
            arrays[i.name] = a.astype(NUMPY_DTYPES[i.datatype], copy=False)
        return arrays
    except SerendipError as e:
        raise InvalidInput(str(e)) from None


def wants_binary(payload) -> bool:
    """Binary output tensors for gRPC (JSON-style contents came back empty to gRPC clients)
    and for REST clients that use the binary extension (tritonclient); plain JSON for a
    JSON request (curl)."""
    if getattr(payload, "from_grpc", False):
        return True
    if (getattr(payload, "parameters", None) or {}).get("binary_data_output"):
        return True
    if any(o.binary_data for o in getattr(payload, "request_outputs", None) or []):
        return True
    return any(getattr(i, "_raw_data", None) is not None for i in payload.inputs)


def make_response(payload, model_name: str, outputs: Mapping[str, np.ndarray],
                  model_spec: ModelSpec) -> InferResponse:
    """Outputs → a v2 response (a fresh id when the request had none: over REST it may be
    None)."""
    spec = {t.name: t for t in model_spec.outputs}
    binary = wants_binary(payload)
    outs = []
    for name, a in outputs.items():
        o = InferOutput(name=name, shape=list(a.shape), datatype=spec[name].datatype)
        o.set_data_from_numpy(np.ascontiguousarray(a), binary_data=binary)
        outs.append(o)
    rid = getattr(payload, "id", None) or str(uuid.uuid4())
    return InferResponse(response_id=rid, model_name=model_name, infer_outputs=outs,
                         use_binary_outputs=binary)


def _types(tensors) -> list[dict]:
    return [{"name": t.name, "datatype": t.datatype, "shape": [-1, *t.dims]} for t in tensors]


class _V2Model(kserve.Model):
    spec: ModelSpec

    def get_input_types(self) -> list[dict]:
        return _types(self.spec.inputs)

    def get_output_types(self) -> list[dict]:
        return _types(self.spec.outputs)


# ------------------------------------------------------------------ fallback predictor
class HandlerModel(_V2Model):
    """``mllm`` or ``retriever`` served by KServe (the fallback when Triton is unavailable)."""

    def __init__(self, handler, max_batch: int | None = None, max_delay_s: float = 0.002):
        super().__init__(handler.spec.name)
        self.spec = handler.spec
        self.handler = handler
        self.batcher = MicroBatcher(handler, max_batch or handler.spec.max_batch_size,
                                    max_delay_s)
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None):
        arrays = request_arrays(self.spec, payload)
        res = await self.batcher.submit(arrays)
        if isinstance(res, SerendipError):
            raise InvalidInput(str(res))
        return make_response(payload, self.name, res, self.spec)

    async def infer_arrays(self, arrays: Mapping[str, np.ndarray]):
        """In-process call (the fallback's recommend skips the network hop)."""
        res = await self.batcher.submit(arrays)
        if isinstance(res, SerendipError):
            raise res
        return res

    def stop(self) -> None:
        self.batcher.close()


# ------------------------------------------------------------------ Triton client
class TritonGrpc:
    """Async v2 calls to Triton with kserve's gRPC client; INVALID_ARGUMENT comes back as a
    :class:`SerendipError` carrying Triton's message (which names the input)."""

    def __init__(self, url: str, timeout_s: float = 30.0):
        self.url, self.timeout_s = url, timeout_s
        self._client = None

    def _get(self):
        if self._client is None:
            from kserve.inference_client import InferenceGRPCClient

            self._client = InferenceGRPCClient(self.url, timeout=self.timeout_s, retries=2)
        return self._client

    async def infer(self, model: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import grpc

        spec = {"mllm": MLLM, "retriever": RETRIEVER}[model]
        inputs = []
        for t in spec.inputs:
            if t.name in arrays:
                a = np.ascontiguousarray(arrays[t.name], dtype=NUMPY_DTYPES[t.datatype])
                i = InferInput(t.name, list(a.shape), t.datatype)
                i.set_data_from_numpy(a, binary_data=True)
                inputs.append(i)
        req = InferRequest(model_name=model, infer_inputs=inputs,
                           request_id=str(uuid.uuid4()))
        try:
            res = await self._get().infer(req)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise remote_error(model, e.details()) from None
            raise ServerFault(f"{model} on Triton failed ({e.code().name}): "
                              f"{e.details()}") from None
        return {o.name: o.as_numpy() for o in res.outputs}

    async def ready(self) -> bool:
        try:
            return bool(await self._get().is_server_ready())
        except Exception:  # noqa: BLE001
            return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


# ------------------------------------------------------------------ recommend transformer
class RecommendTransformer(_V2Model):
    """``recommend``: cluster lookup, then the retriever inside that cluster (module docstring).

    ``predict_cluster`` and ``retrieve`` are coroutines: Triton over gRPC
    (:meth:`for_triton`), or the fallback predictors in process (:meth:`for_handlers`).
    """

    spec = RECOMMEND

    def __init__(self, lookup, catalog, predict_cluster, retrieve,
                 cache: ClusterCache | None = None, name: str = "recommend"):
        from serendip.platform.serving.metrics import RecommendMetrics

        super().__init__(name)
        self.lookup, self.catalog = lookup, catalog
        self.metrics = RecommendMetrics(name)
        self.flow = RecommendFlow(lookup=lookup, item_info=catalog, predict=predict_cluster,
                                  retrieve=retrieve, cache=cache or ClusterCache(),
                                  on_phase=self.metrics.phase,
                                  on_store_error=self.metrics.store_error)
        self._cache_seen = (self.flow.cache.hits, self.flow.cache.misses)
        self.ready = True

    @classmethod
    def for_triton(cls, lookup, catalog, triton_grpc_url: str, **kw) -> RecommendTransformer:
        triton = TritonGrpc(triton_grpc_url)

        async def predict_cluster(info: dict) -> ClusterChoice:
            return first_row_choice(await triton.infer("mllm", mllm_request(info)))

        async def retrieve(history, cluster_id, k):
            return first_row_items(await triton.infer(
                "retriever", retriever_request(history, cluster_id, k)))

        model = cls(lookup, catalog, predict_cluster, retrieve, **kw)
        model.triton = triton
        return model

    @classmethod
    def for_handlers(cls, lookup, catalog, mllm: HandlerModel, retriever: HandlerModel,
                     **kw) -> RecommendTransformer:
        async def predict_cluster(info: dict) -> ClusterChoice:
            return first_row_choice(await mllm.infer_arrays(mllm_request(info)))

        async def retrieve(history, cluster_id, k):
            return first_row_items(await retriever.infer_arrays(
                retriever_request(history, cluster_id, k)))

        return cls(lookup, catalog, predict_cluster, retrieve, **kw)

    async def predict(self, payload, headers=None, response_headers=None):
        """One v2 request; counted in the Prometheus metrics (:mod:`.metrics`) by outcome,
        phase latency, cluster source and cache hits."""
        outcome = "server_error"
        try:
            arrays = request_arrays(self.spec, payload)
            outputs = await self.flow.infer(arrays)
            outcome = "ok"
        except InvalidInput:
            outcome = "client_error"
            raise
        except ServerFault as e:
            raise ServingFault(str(e)) from None
        except SerendipError as e:
            outcome = "client_error"
            raise InvalidInput(str(e)) from None
        finally:
            self._count(outcome)
        self.metrics.choices(x.decode() if isinstance(x, bytes) else str(x)
                             for x in outputs["SOURCE"][:, 0])
        return make_response(payload, self.name, outputs, self.spec)

    def _count(self, outcome: str) -> None:
        self.metrics.request(outcome)
        hits, misses = self.flow.cache.hits, self.flow.cache.misses
        self.metrics.cache(hits - self._cache_seen[0], misses - self._cache_seen[1])
        self._cache_seen = (hits, misses)


# ------------------------------------------------------------------ loopback server
class _BadInputOneLine(logging.Filter):
    """A refused request (InvalidInput) is logged as one WARNING line, not a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ServingFault):
            record.msg, record.args = f"server fault: {exc}", ()
            record.exc_info, record.exc_text = None, None
            return True
        if isinstance(exc, InvalidInput) or "InvalidInput" in str(record.msg):
            record.msg, record.args = f"bad request: {exc if exc else record.msg}", ()
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_logs(access_log: bool = False) -> None:
    """Per-request timing/access lines off (they cost more than a retriever call under load);
    refused requests as one line."""
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    if not access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    for name in ("kserve", "kserve.errors"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _BadInputOneLine) for f in lg.filters):
            lg.addFilter(_BadInputOneLine())
    for h in logging.getLogger("kserve").handlers:
        if not any(isinstance(f, _BadInputOneLine) for f in h.filters):
            h.addFilter(_BadInputOneLine())


def _status_interceptor_class():
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor

    class StatusInterceptor(ExceptionToStatusInterceptor):
        """kserve's interceptor, except that a server-side fault is INTERNAL (with its
        message), not INVALID_ARGUMENT."""

        async def handle_exception(self, ex, request_or_iterator, context, method_name):
            if isinstance(ex, ServingFault):
                import grpc

                logging.getLogger("kserve").error("server fault: %s", ex)
                await context.abort(grpc.StatusCode.INTERNAL, str(ex))
            return await super().handle_exception(ex, request_or_iterator, context,
                                                  method_name)

    return StatusInterceptor


def _StatusInterceptor():  # noqa: N802 — reads like the class it builds
    return _status_interceptor_class()()


class LoopbackModelServer(kserve.ModelServer):
    """kserve's ModelServer bound to ``host`` (REST and gRPC), single process."""

    def __init__(self, host: str = "127.0.0.1", access_log: bool = False, **kwargs):
        kwargs.setdefault("workers", 1)
        kwargs.setdefault("enable_latency_logging", False)
        super().__init__(**kwargs)
        self.host = host
        quiet_logs(access_log)

    def start(self, models) -> None:
        from kserve.protocol.grpc.server import GRPCServer
        from kserve.protocol.rest.server import RESTServer

        host = self.host

        class _GRPC(GRPCServer):
            async def start(self, max_workers):
                from concurrent import futures

                from grpc import aio
                from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
                from kserve.protocol.grpc.servicer import InferenceServicer

                servicer = InferenceServicer(self._data_plane,
                                             self._model_repository_extension)
                self._server = aio.server(
                    futures.ThreadPoolExecutor(max_workers=max_workers),
                    # no LoggingInterceptor: one INFO line per request costs more than a
                    # retriever call under load
                    interceptors=(_StatusInterceptor(),),
                    # no SO_REUSEPORT: a second server on a busy port must fail, not share it
                    options=[("grpc.so_reuseport", 0),
                             ("grpc.max_send_message_length", 64 << 20),
                             ("grpc.max_receive_message_length", 64 << 20)])
                grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
                    servicer, self._server)
                self._server.add_insecure_port(f"{host}:{self._port}")
                await self._server.start()
                await self._server.wait_for_termination()

        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = RESTServer(
            "kserve.model_server:app", self.dataplane, self.model_repository_extension,
            self.http_port, access_log_format=self.access_log_format, workers=1,
            grace_period=self.grace_period, event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive)
        self._rest_server.config.host = host
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = _GRPC(self.grpc_port, self.dataplane,
                                      self.model_repository_extension, kwargs={},
                                      grace_period=2)
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        try:
            asyncio.run(self._serve())
        except asyncio.CancelledError:
            pass
