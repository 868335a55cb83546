"""`serendip serve` with a REAL Triton server (pytriton wheel, .venv-triton) serving mllm and
retriever, behind the KServe recommend transformer reading Feast: HTTP and gRPC, good and bad
inputs, `serendip recommend`, clean shutdown on SIGTERM, and (slow) a bounded load test."""

from __future__ import annotations

import socket

import pytest
from serving_cases import cli_recommend, run_backend_checks
from serving_workdir import cluster_members, scored_items, served_workdir, unscored_items

from serendip.platform.serving.harness import ServeProcess, probe
from serendip.platform.serving.triton import triton_available

pytestmark = pytest.mark.skipif(
    not triton_available(),
    reason="Triton venv (.venv-triton) missing or broken: run `make triton-venv` "
           "(make test builds it)")


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory):
    wd = served_workdir(tmp_path_factory, feast=True)
    server = ServeProcess(wd, "triton").start()
    yield server, wd
    if server.alive():
        server.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_triton_serves_good_and_bad_requests(triton_server, protocol):
    server, wd = triton_server
    assert "features from feast" in server.log_text()
    run_backend_checks(server, wd, protocol)


def test_recommend_cli_returns_items_of_the_returned_cluster(triton_server):
    server, wd = triton_server
    members = cluster_members(wd)
    for protocol, item in (("http", scored_items(wd)[5]), ("grpc", unscored_items(wd)[3])):
        ans = cli_recommend(server, item, scored_items(wd)[6:8], protocol)
        assert ans["item_ids"] and set(ans["item_ids"]) <= members[ans["cluster_id"]]
        assert ans["source"] in (("feast",) if protocol == "http" else ("mllm",))


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
