"""v2 client (``tritonclient``, HTTP or gRPC) for ``serendip recommend``, tests and benchmarks.

The same client talks to Triton, to the KServe fallback and to the ``recommend`` transformer:
all speak the v2 protocol with the tensors of :mod:`serendip.serving.contracts`. Never use the gRPC
protocol in a process that imported ``kserve`` (protobuf clash).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from serendip.errors import SerendipError
from serendip.serving.contracts import NUMPY_DTYPES, SPECS

DEFAULT_URLS = {"http": "127.0.0.1:8080", "grpc": "127.0.0.1:8081"}


class InferError(SerendipError):
    """A v2 error answer: ``status`` is ``"400"`` (HTTP) or ``"StatusCode.INVALID_ARGUMENT"``."""

    def __init__(self, status: str, message: str):
        self.status = status
        super().__init__(message, field="request", fix="see the message; the server is fine")

    @property
    def is_bad_input(self) -> bool:
        return self.status in ("400", "StatusCode.INVALID_ARGUMENT")


@dataclass
class RecommendResult:
    item_ids: list[str]
    scores: list[float]
    cluster_id: str
    description: str
    source: str                       # where the cluster came from (feast | table | cache | mllm)
    item_sources: list[str] = field(default_factory=list)   # exploit | serendipitous per item

    def to_dict(self) -> dict:
        return asdict(self)


def _str(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class V2Client:
    def __init__(self, url: str | None = None, protocol: str = "http", timeout_s: float = 60.0):
        if protocol not in ("http", "grpc"):
            raise SerendipError(f"unknown protocol {protocol!r}", field="protocol",
                                fix="use http or grpc")
        self.protocol = protocol
        self.url = (url or DEFAULT_URLS[protocol]).removeprefix("http://").removeprefix(
            "grpc://")
        self.timeout_s = timeout_s
        if protocol == "grpc":
            import tritonclient.grpc as tc
        else:
            import tritonclient.http as tc
        self._tc = tc
        kw = {"network_timeout": timeout_s, "connection_timeout": timeout_s} \
            if protocol == "http" else {}
        self.client = tc.InferenceServerClient(self.url, **kw)

    def ready(self) -> bool:
        from tritonclient.utils import InferenceServerException

        try:
            return bool(self.client.is_server_ready())
        except (InferenceServerException, OSError, ConnectionError):
            return False

    def infer(self, model: str, arrays: Mapping[str, np.ndarray],
              datatypes: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
        """Send ``arrays`` (name → array with the batch dimension) to ``model``.

        ``datatypes`` overrides the declared v2 datatypes (tests send wrong ones on purpose).
        """
        from tritonclient.utils import InferenceServerException

        spec = SPECS.get(model) or (SPECS["recommend"] if model.endswith("recommend") else None)
        declared = {t.name: t.datatype for t in spec.inputs} if spec else {}
        inputs = []
        for name, a in arrays.items():
            dt = (datatypes or {}).get(name) or declared.get(name) or "BYTES"
            a = np.asarray(a)
            if dt in NUMPY_DTYPES and dt != "BYTES" and a.dtype == np.object_:
                a = a.astype(NUMPY_DTYPES[dt])
            i = self._tc.InferInput(name, list(a.shape), dt)
            i.set_data_from_numpy(a)
            inputs.append(i)
        outs = [self._tc.InferRequestedOutput(t.name) for t in spec.outputs] if spec else None
        kw = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        try:
            res = self.client.infer(model, inputs, outputs=outs, **kw)
        except InferenceServerException as e:
            raise InferError(str(e.status()), e.message() or str(e)) from None
        names = [t.name for t in spec.outputs] if spec else []
        return {n: res.as_numpy(n) for n in names}

    def recommend(self, item_id: str, history: Sequence[str] = (), k: int = 10,
                  share: float | None = None) -> RecommendResult:
        """The blended slate (``share``: serendipitous share of k, None: the server's)."""
        arrays = {"ITEM_ID": np.array([[item_id.encode()]], dtype=np.object_),
                  "K": np.array([[k]], dtype=np.int32)}
        if share is not None:
            arrays["SHARE"] = np.array([[share]], dtype=np.float32)
        if history:
            arrays["HISTORY"] = np.array([[h.encode() for h in history]], dtype=np.object_)
        out = self.infer("recommend", arrays)
        ids = [_str(x) for x in out["ITEM_IDS"][0]]
        scores = [float(s) for s in out["SCORES"][0]]
        srcs = [_str(x) for x in out["ITEM_SOURCES"][0]]
        keep = [j for j, i in enumerate(ids) if i]
        return RecommendResult([ids[j] for j in keep], [scores[j] for j in keep],
                               _str(out["CLUSTER_ID"][0][0]), _str(out["DESCRIPTION"][0][0]),
                               _str(out["SOURCE"][0][0]), [srcs[j] for j in keep])

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001
            pass
