"""``python -m serendip.platform.serving.probe``: a v2 client in its OWN process, for the
serving tests and benchmarks — tritonclient.grpc must never share a process with kserve
(protobuf clash), and a pytest or benchmark process may have imported kserve.

stdin: JSON ``{"url", "protocol", "cases": [...], "load": {...}?}``. A case is
``{"model", "inputs": {name: {"shape", "datatype", "data" | "b64"}}}``; the answer is
``{"ok": true, "outputs": {name: nested lists}}`` or ``{"ok": false, "status", "message"}``.
``load`` = ``{"model", "inputs", "requests", "concurrency"}`` (or ``"items"`` for recommend
requests cycling over item ids): latencies, throughput and errors. stdout: one JSON object.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time

import numpy as np


def _array(spec: dict) -> np.ndarray:
    dt = spec["datatype"]
    if "b64" in spec:
        data = [base64.b64decode(x) for x in spec["b64"]]
    else:
        data = spec["data"]
    if dt == "BYTES":
        flat = [x if isinstance(x, bytes) else str(x).encode() for x in np.ravel(
            np.array(data, dtype=object))] if len(data) else []
        return np.array(flat, dtype=np.object_).reshape(spec["shape"])
    np_dt = {"INT32": np.int32, "INT64": np.int64, "FP32": np.float32, "FP64": np.float64}[dt]
    return np.array(data, dtype=np_dt).reshape(spec["shape"])


def _jsonable(a: np.ndarray):
    if a.dtype == np.object_:
        return [[x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in row]
                for row in a.reshape(a.shape[0], -1)]
    return np.where(np.isnan(a), None, a).tolist() if a.dtype.kind == "f" else a.tolist()


def run_case(client, case: dict) -> dict:
    from serendip.platform.serving.client import InferError

    inputs = case["inputs"]
    arrays = {n: _array(s) for n, s in inputs.items()}
    datatypes = {n: s["datatype"] for n, s in inputs.items()}
    try:
        out = client.infer(case["model"], arrays, datatypes)
    except InferError as e:
        return {"ok": False, "status": e.status, "message": e.message}
    return {"ok": True, "outputs": {n: _jsonable(a) for n, a in out.items()}}


def run_load(url: str, protocol: str, load: dict) -> dict:
    from serendip.platform.serving.client import InferError, V2Client

    n, conc = int(load["requests"]), int(load["concurrency"])
    items = load.get("items")
    history = load.get("history", [])
    k = int(load.get("k", 10))
    fixed = {n_: _array(s) for n_, s in load.get("inputs", {}).items()}
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(n))

    def worker() -> None:
        client = V2Client(url, protocol, timeout_s=60)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            t0 = time.perf_counter()
            try:
                if items:
                    client.recommend(items[i % len(items)], history, k)
                else:
                    client.infer(load["model"], fixed)
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
            except (InferError, Exception) as e:  # noqa: BLE001 — counted, reported
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:300])
        client.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000 if lat else np.array([np.nan])
    return {"requests": n, "concurrency": conc, "ok": len(lat), "errors": len(errors),
            "error_examples": errors[:5], "wall_s": round(wall, 3),
            "throughput_rps": round(len(lat) / wall, 1) if wall else None,
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3)}


def main() -> int:
    req = json.load(sys.stdin)
    from serendip.platform.serving.client import V2Client

    out: dict = {}
    if req.get("cases"):
        client = V2Client(req["url"], req["protocol"], timeout_s=60)
        out["ready"] = client.ready()
        out["results"] = [run_case(client, c) for c in req["cases"]]
        client.close()
    if req.get("load"):
        out["load"] = run_load(req["url"], req["protocol"], req["load"])
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
