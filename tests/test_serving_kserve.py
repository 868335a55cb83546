"""`serendip serve --backend kserve`: the KServe fallback serves mllm, retriever and recommend
with the same tensors and errors as Triton, over HTTP and gRPC, and stops on SIGINT."""

from __future__ import annotations

import signal

import pytest
from serving_cases import check_plain_json, run_backend_checks

from serendip.platform.serving.harness import ServeProcess


@pytest.fixture(scope="module")
def kserve_server(served_wd):
    wd = served_wd
    server = ServeProcess(wd, "kserve", extra=["--features", "table"]).start()
    yield server, wd
    if server.alive():
        server.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_kserve_fallback_serves_good_and_bad_requests(kserve_server, protocol):
    server, wd = kserve_server
    assert "backend kserve; features from table" in server.log_text()
    run_backend_checks(server, wd, protocol)
    if protocol == "http":
        check_plain_json(server.http, wd)


def _listeners(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    out = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            local, state = ln.split()[1], ln.split()[3]
            addr, p = local.rsplit(":", 1)
            if state == "0A" and int(p, 16) == port:
                out.append(addr)
    return out


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def test_kserve_binds_loopback_only_and_stops_on_sigint(kserve_server):
    server, _ = kserve_server
    for port in (int(server.http.rsplit(":", 1)[1]), int(server.grpc.rsplit(":", 1)[1])):
        addrs = _listeners(port)
        assert addrs and set(addrs) <= LOOPBACK, (port, addrs)
    assert server.stop(signal.SIGINT) == 0
    assert "serendip serve: stopped" in server.log_tail(20)


@pytest.mark.slow
def test_auto_backend_falls_back_to_kserve_when_triton_cannot_start(request, tmp_path):
    """Triton is installed but cannot load the repository (a retriever config.pbtxt that is not
    protobuf text): ``--backend auto`` prints why and serves with KServe. A Triton port in use
    is not this case: it is the client's mistake, refused before anything starts (exit 2)."""
    import shutil

    from serendip.platform.serving.harness import probe
    from serendip.platform.serving.server import ensure_repository
    from serendip.platform.serving.triton import triton_available

    if not triton_available():
        pytest.skip("Triton venv missing: auto selects kserve directly")
    wd = tmp_path / "wd"
    shutil.copytree(request.getfixturevalue("served_wd"), wd, symlinks=True)
    config = ensure_repository(wd) / "retriever" / "config.pbtxt"
    config.write_text(config.read_text() + "\nthis is not protobuf text {\n")
    server = ServeProcess(wd, "auto", extra=["--features", "table"])
    try:
        server.start()
        text = server.log_text()
        assert "Falling back to the KServe backend" in text and "backend kserve" in text
        res = probe(server.url("http"), "http", [{"model": "mllm", "inputs": {
            "TITLE": {"data": [["t"]], "shape": [1, 1], "datatype": "BYTES"},
            "FRAMES": {"data": [["synth:1.90.2.1.0.1#f1"]], "shape": [1, 1],
                       "datatype": "BYTES"}}}])
        assert res["results"][0]["ok"]
    finally:
        server.stop()
