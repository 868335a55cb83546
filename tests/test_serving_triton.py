"""`serendip serve` with a REAL Triton server (pytriton wheel, .venv-triton) serving mllm and
retriever, behind the KServe recommend transformer reading Feast: HTTP and gRPC, good and bad
inputs, `serendip recommend`, clean shutdown on SIGTERM, and (slow) a bounded load test."""

from __future__ import annotations

import socket

import pytest
from serving_cases import check_plain_json, check_recommend, cli_recommend, run_backend_checks
from serving_fixtures import cluster_members, scored_items, unscored_items

from serendip.platform.serving.harness import ServeProcess, probe
from serendip.platform.serving.triton import triton_available

pytestmark = pytest.mark.skipif(
    not triton_available(),
    reason="Triton venv (.venv-triton) missing or broken: run `make triton-venv` "
           "(make test builds it)")


@pytest.fixture(scope="module")
def triton_server(served_wd):
    wd = served_wd
    server = ServeProcess(wd, "triton").start()
    yield server, wd
    if server.alive():
        server.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_triton_serves_good_and_bad_requests(triton_server, protocol):
    server, wd = triton_server
    assert "features from feast" in server.log_text()
    run_backend_checks(server, wd, protocol)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_triton_bls_recommend(triton_server, protocol):
    """The all-Triton recommend (BLS over a scores snapshot) answers like the transformer."""
    server, wd = triton_server
    url = server.triton_http if protocol == "http" else server.triton_grpc
    check_recommend(url, protocol, wd)


def test_metrics_transformer_and_triton(triton_server):
    """Issue 17 item 3: the transformer's /metrics counts requests, phases, sources and cache
    hits exactly; Triton's own metrics port stays up and counts the transformer's calls."""
    from test_metrics_serving import check_metrics, parse, scrape_text

    server, wd = triton_server
    metrics_url = f"http://127.0.0.1:{server.ports[4]}/metrics"

    def triton(model):
        m = parse(scrape_text(metrics_url))
        return sum(v for (name, labels), v in m.items()
                   if name in ("nv_inference_request_success",            # the parser
                               "nv_inference_request_success_total")         # adds _total
                   and ("model", model) in labels)

    before = {m: triton(m) for m in ("mllm", "retriever")}
    check_metrics(server, wd)
    # two per answered request: the cluster's items and the blended slate's unrestricted ones
    assert triton("retriever") - before["retriever"] == 8
    assert triton("mllm") - before["mllm"] == 1                # the unscored item


def test_plain_json_requests_get_json_answers(triton_server):
    server, wd = triton_server
    check_plain_json(server.http, wd)                  # the KServe transformer
    check_plain_json(server.triton_http, wd)           # Triton's BLS recommend


def test_recommend_cli_returns_items_of_the_returned_cluster(triton_server):
    server, wd = triton_server
    members = cluster_members(wd)
    for protocol, item in (("http", scored_items(wd)[5]), ("grpc", unscored_items(wd)[3])):
        ans = cli_recommend(server, item, scored_items(wd)[6:8], protocol)
        ser = [i for i, s in zip(ans["item_ids"], ans["item_sources"]) if s == "serendipitous"]
        assert len(ans["item_ids"]) == 5 and len(ser) == 1            # ceil(0.2 · 5) of 5
        assert set(ser) <= members[ans["cluster_id"]]
        assert ans["source"] in (("feast",) if protocol == "http" else ("mllm",))


def test_cluster_transformer_entry_point_against_triton(triton_server):
    """The container command of the recommend InferenceService, with KServe's arguments."""
    import subprocess
    import sys
    import time

    from serendip.platform.serving.harness import _ready, free_ports

    server, wd = triton_server
    http, grpc = free_ports(2)
    log = open(wd / "transformer.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serendip.platform.serving.transformer", "--workdir", str(wd),
         "--model_name", "serendip-recommend", "--predictor_host", server.triton_grpc,
         "--predictor_protocol", "grpc-v2", "--http_port", str(http), "--grpc_port", str(grpc),
         "--host", "127.0.0.1", "--features", "table"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not _ready(http) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.25)
        case = {"inputs": {"ITEM_ID": {"data": [[unscored_items(wd)[7]]], "shape": [1, 1],
                                       "datatype": "BYTES"}}}
        res = probe(f"127.0.0.1:{http}", "http",
                    [dict(case, model="serendip-recommend"), dict(case, model="recommend")])
        members = cluster_members(wd)
        for r in res["results"]:
            assert r["ok"], r
            out = r["outputs"]
            ser = [i for i, s in zip(out["ITEM_IDS"][0], out["ITEM_SOURCES"][0])
                   if i and s == "serendipitous"]
            assert ser and set(ser) <= members[out["CLUSTER_ID"][0][0]]
        assert res["results"][0]["outputs"]["SOURCE"][0][0] == "mllm"
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        log.close()


@pytest.mark.slow
def test_triton_load_zero_errors(triton_server):
    server, wd = triton_server
    load = {"items": scored_items(wd)[:50], "history": scored_items(wd)[60:65], "k": 10,
            "requests": 2000, "concurrency": 8}
    for protocol in ("http", "grpc"):
        res = probe(server.url(protocol), protocol, load=load)["load"]
        assert res["errors"] == 0, res
        assert res["ok"] == 2000
    assert server.alive()


def test_sigterm_stops_kserve_and_triton(triton_server):
    server, _ = triton_server
    triton_port = int(server.triton_http.rsplit(":", 1)[1])
    assert server.stop() == 0
    assert "tritonserver stopped (exit 0)" in server.log_tail(50)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", triton_port), timeout=2).close()
