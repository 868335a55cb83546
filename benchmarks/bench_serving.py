"""Serving on loopback, tiny models on CPU, one run:

* ``recommend`` p50/p99 latency and throughput for Feast hits (cache TTL 0: every request
  reads Feast, then Triton's retriever), 8 concurrent clients, HTTP and gRPC; zero errors
  expected (target p99 <= 30 ms);
* ``mllm`` batch-of-8 latency on Triton (one request of 8 rows, and 8 concurrent one-row
  requests that Triton's dynamic batcher groups), with the in-process predictor for scale;
* the same requests through the KServe fallback vs Triton: ratios of p50 latency;
* the in-process item→cluster cache vs a Feast online read;
* the all-Triton BLS ``recommend`` (scores snapshot, BLS calls) vs the KServe transformer;
* Feast's online store on a real ``redis-server`` (127.0.0.1, no persistence) vs the embedded
  sqlite store: the same ``recommend`` load on the Triton backend (the transformer reads Redis
  through Feast, the BLS ``recommend`` reads it directly), p50/p99 side by side.

Servers and clients run in separate processes (``serendip serve`` subprocess; the probe
subprocess drives the load with ``tritonclient``), all on the same 2 cores — the load generator
competes with the servers, so absolute figures are pessimistic; ratios are what to compare.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

SYNTH_FRAMES = [f"synth:{s}.{h}.{t}.0.1.{i}#f{i}" for i, (s, h, t) in
                enumerate([(0, 30, 1), (1, 90, 2), (2, 150, 3), (3, 210, 0)])]


def _mllm_batch(rows: int) -> dict:
    frames = [SYNTH_FRAMES[i % 3: i % 3 + 2] for i in range(rows)]
    return {"TITLE": {"data": [[f"clip {i}"] for i in range(rows)], "shape": [rows, 1],
                      "datatype": "BYTES"},
            "FRAMES": {"data": frames, "shape": [rows, 2], "datatype": "BYTES"}}


def _measure_backend(wd: Path, backend: str, n: int, quick: bool,
                     recommend_only: bool = False) -> dict:
    from serendip.platform.serving.harness import ServeProcess, probe
    from serendip.testing.serving import scored_item_ids

    hits = scored_item_ids(wd)
    out: dict = {}
    server = ServeProcess(wd, backend, extra=["--cache-ttl", "0"]).start()
    try:
        out["startup_s"] = round(server.startup_s, 1)
        history = hits[100:105]
        for protocol in ("http", "grpc"):
            probe(server.url(protocol), protocol, load={"items": hits[:50], "history": history,
                                                        "requests": 200, "concurrency": 8})
            out[f"recommend_{protocol}"] = probe(
                server.url(protocol), protocol,
                load={"items": hits, "history": history, "k": 10, "requests": n,
                      "concurrency": 8})["load"]
            out[f"recommend_{protocol}_1client"] = probe(   # service time, no queueing
                server.url(protocol), protocol,
                load={"items": hits, "history": history, "k": 10, "requests": n // 5,
                      "concurrency": 1})["load"]
        if backend == "triton":   # the all-Triton BLS recommend (snapshot or Redis lookup)
            for conc, key in ((8, "bls_recommend_grpc"), (1, "bls_recommend_grpc_1client")):
                out[key] = probe(server.triton_grpc, "grpc", load={
                    "items": hits, "history": history, "k": 10,
                    "requests": n if conc == 8 else n // 5, "concurrency": conc})["load"]
        if recommend_only:
            return out
        retr = {"CLUSTER_ID": {"data": [["0"]], "shape": [1, 1], "datatype": "BYTES"},
                "HISTORY": {"data": [history], "shape": [1, 5], "datatype": "BYTES"},
                "K": {"data": [[10]], "shape": [1, 1], "datatype": "INT32"}}
        out["retriever_grpc"] = probe(server.url("grpc", "retriever"), "grpc", load={
            "model": "retriever", "inputs": retr, "requests": n // 4, "concurrency": 8})["load"]
        reps = 5 if quick else 20
        out["mllm_batch8_grpc"] = probe(server.url("grpc", "mllm"), "grpc", load={
            "model": "mllm", "inputs": _mllm_batch(8), "requests": reps,
            "concurrency": 1})["load"]
        out["mllm_8x1_concurrent_grpc"] = probe(server.url("grpc", "mllm"), "grpc", load={
            "model": "mllm", "inputs": _mllm_batch(1), "requests": reps * 8,
            "concurrency": 8})["load"]
        out["mllm_1x1_sequential_grpc"] = probe(server.url("grpc", "mllm"), "grpc", load={
            "model": "mllm", "inputs": _mllm_batch(1), "requests": reps,
            "concurrency": 1})["load"]
    finally:
        out["stop_exit_code"] = server.stop()
    return out


def _in_process(wd: Path) -> dict:
    """Predictor batch-of-8 latency without a server, and cache vs Feast lookups."""
    import numpy as np

    from serendip.platform.serving.lookup import ClusterLookup
    from serendip.serving.cluster_choice import ClusterCache
    from serendip.serving.handlers import MllmHandler
    from serendip.serving.repository import latest_mllm_dir
    from serendip.testing.serving import scored_item_ids

    h = MllmHandler.load(latest_mllm_dir(wd))
    batch = {"TITLE": np.array([[f"clip {i}".encode()] for i in range(8)], dtype=object),
             "FRAMES": np.array([[f.encode() for f in SYNTH_FRAMES[:2]]] * 8, dtype=object)}
    h.infer([batch])
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        h.infer([batch])
        times.append(time.perf_counter() - t0)
    lookup = ClusterLookup(wd, "auto")
    items = scored_item_ids(wd)[:200]
    feast_t, cache_t = [], []
    cache = ClusterCache()
    for item in items:
        t0 = time.perf_counter()
        choice = lookup(item)
        feast_t.append(time.perf_counter() - t0)
        cache.put(item, choice)
    for item in items:
        t0 = time.perf_counter()
        cache.get(item)
        cache_t.append(time.perf_counter() - t0)
    ms = lambda xs, q: round(float(np.percentile(np.array(xs) * 1000, q)), 4)  # noqa: E731
    return {"mllm_batch8_in_process_ms_p50": round(statistics.median(times) * 1000, 2),
            "lookup_source": lookup.kind,
            "feast_read_ms": {"p50": ms(feast_t, 50), "p99": ms(feast_t, 99)},
            "cache_read_ms": {"p50": ms(cache_t, 50), "p99": ms(cache_t, 99)}}


def _lookup_ms(wd: Path) -> dict:
    """p50/p99 of one online read through the serving lookup (no cache)."""
    import numpy as np

    from serendip.platform.serving.lookup import ClusterLookup
    from serendip.testing.serving import scored_item_ids

    lookup = ClusterLookup(wd, "auto")
    items = scored_item_ids(wd)[:200]
    lookup(items[0])
    t = []
    for item in items:
        t0 = time.perf_counter()
        lookup(item)
        t.append(time.perf_counter() - t0)
    ms = np.array(t) * 1000
    return {"source": lookup.kind, "p50": round(float(np.percentile(ms, 50)), 4),
            "p99": round(float(np.percentile(ms, 99)), 4)}


def _measure_redis(wd: Path, tmp: Path, n: int, quick: bool, backend: str) -> dict:
    """The recommend load with Feast's online store on a local redis-server."""
    import os
    import shutil

    from serendip.platform import features
    from serendip.platform.serving.redis_server import RedisServer, redis_server_binary

    if redis_server_binary() is None:
        return {"skipped": "redis-server not installed (apt-get install -y redis-server)"}
    rwd = tmp / "wd-redis"
    shutil.copytree(wd, rwd, ignore=shutil.ignore_patterns(
        "feature_repo", "model_repository", ".serve", "*.log"))
    with RedisServer(workdir=tmp) as redis, mock.patch.dict(os.environ, {
            "SERENDIP_FEAST_ONLINE_STORE": "redis",
            "FEAST_REDIS_CONNECTION_STRING": redis.connection_string}):
        t0 = time.perf_counter()
        features.sync(rwd)
        out = {"materialize_s": round(time.perf_counter() - t0, 2),
               "lookup_ms": _lookup_ms(rwd)}
        out[backend] = _measure_backend(rwd, backend, n, quick, recommend_only=True)
    return out


def _side_by_side(sqlite: dict, redis: dict) -> dict:
    keys = [k for k in ("recommend_http", "recommend_grpc", "recommend_http_1client",
                        "recommend_grpc_1client", "bls_recommend_grpc",
                        "bls_recommend_grpc_1client") if k in sqlite and k in redis]
    return {k: {"sqlite": {q: sqlite[k][f"{q}_ms"] for q in ("p50", "p99")},
                "redis": {q: redis[k][f"{q}_ms"] for q in ("p50", "p99")},
                "errors": sqlite[k].get("errors", 0) + redis[k].get("errors", 0)}
            for k in keys}


def run(quick: bool = False) -> dict:
    import os

    from serendip.platform import features
    from serendip.platform.serving.triton import triton_available
    from serendip.testing.serving import FixtureConfig, build_serving_workdir

    n = 1000 if quick else 10_000
    result: dict = {"requests_per_protocol": n, "concurrency": 8,
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        wd = build_serving_workdir(Path(tmp) / "wd", FixtureConfig())
        features.sync(wd)
        result["in_process"] = _in_process(wd)
        backends = ["triton", "kserve"] if triton_available() else ["kserve"]
        if "triton" not in backends:
            result["note"] = "Triton venv missing (make triton-venv): KServe fallback only"
        for b in backends:
            result[b] = _measure_backend(wd, b, n, quick)
        result["lookup_ms_sqlite"] = _lookup_ms(wd)
        result["redis"] = _measure_redis(wd, Path(tmp), n, quick, backends[0])
        if backends[0] in result["redis"]:
            result["feast_sqlite_vs_redis"] = _side_by_side(result[backends[0]],
                                                            result["redis"][backends[0]])
    if "triton" in result:
        t, k = result["triton"], result["kserve"]
        result["kserve_over_triton_p50"] = {
            key: round(k[key]["p50_ms"] / t[key]["p50_ms"], 2)
            for key in ("recommend_http", "recommend_grpc", "retriever_grpc",
                        "mllm_batch8_grpc", "mllm_8x1_concurrent_grpc")}
        result["transformer_over_bls_p50"] = {
            "8_clients": round(t["recommend_grpc"]["p50_ms"] / t["bls_recommend_grpc"]["p50_ms"],
                               2),
            "1_client": round(t["recommend_grpc_1client"]["p50_ms"]
                              / t["bls_recommend_grpc_1client"]["p50_ms"], 2)}
        p99 = {key: t[key]["p99_ms"] for key in ("recommend_http", "recommend_grpc",
                                                 "recommend_http_1client",
                                                 "recommend_grpc_1client")}
        result["target"] = {"recommend_p99_ms": 30, "triton_recommend_p99_ms": p99,
                            "meets_1client": max(p99["recommend_http_1client"],
                                                 p99["recommend_grpc_1client"]) <= 30,
                            "meets_8clients": max(p99["recommend_http"],
                                                  p99["recommend_grpc"]) <= 30}
    result["errors_total"] = sum(v.get("errors", 0) for b in ("triton", "kserve")
                                 for v in result.get(b, {}).values() if isinstance(v, dict)) \
        + sum(v.get("errors", 0) for v in result.get("redis", {}).get(
            backends[0], {}).values() if isinstance(v, dict))
    return result


def run_stores(n: int = 2000) -> dict:
    """Only the Feast online-store comparison (sqlite vs Redis, Triton backend when its venv
    exists): ``python -m benchmarks.bench_serving [N]`` writes
    ``benchmarks/results/serving_stores.json``."""
    import os

    from serendip.platform import features
    from serendip.platform.serving.triton import triton_available
    from serendip.testing.serving import FixtureConfig, build_serving_workdir

    backend = "triton" if triton_available() else "kserve"
    result: dict = {"requests_per_protocol": n, "concurrency": 8, "backend": backend,
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        wd = build_serving_workdir(Path(tmp) / "wd", FixtureConfig())
        features.sync(wd)
        result["lookup_ms_sqlite"] = _lookup_ms(wd)
        result["sqlite"] = _measure_backend(wd, backend, n, True, recommend_only=True)
        result["redis"] = _measure_redis(wd, Path(tmp), n, True, backend)
        if backend in result["redis"]:
            result["feast_sqlite_vs_redis"] = _side_by_side(result["sqlite"],
                                                            result["redis"][backend])
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["errors_total"] = sum(v.get("errors", 0) for d in (
        result["sqlite"], result["redis"].get(backend, {})) for v in d.values()
        if isinstance(v, dict))
    return result


if __name__ == "__main__":
    import json
    import sys

    out = run_stores(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
    out["_meta"] = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "command": "python -m benchmarks.bench_serving " + " ".join(sys.argv[1:])}
    path = Path(__file__).parent / "results" / "serving_stores.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out.get("feast_sqlite_vs_redis", out), indent=2))
