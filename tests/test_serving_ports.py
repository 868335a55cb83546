"""`serve` on a port in use (issue 12 case 12): checked before anything starts, one line, exit
2; and a Triton port answered by another process is never taken for our Triton."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading

import pytest

from serendip.errors import SerendipError


@pytest.fixture
def busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def _free() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("option,backend", [("--http-port", "kserve"), ("--grpc-port", "kserve"),
                                            ("--triton-grpc-port", "triton"),
                                            ("--triton-metrics-port", "triton")])
def test_serve_on_a_busy_port_is_one_line_exit_2(tmp_path, busy_port, capsys, option, backend,
                                                 monkeypatch):
    from serendip.cli import main
    from serendip.platform.serving import server

    monkeypatch.setattr(server, "resolve_backend", lambda cfg: backend)
    ports = {o: _free() for o in ("--http-port", "--grpc-port", "--triton-http-port",
                                  "--triton-grpc-port", "--triton-metrics-port")}
    ports[option] = busy_port
    args = ["serve", "--workdir", str(tmp_path), "--backend", backend]
    for o, p in ports.items():
        args += [o, str(p)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and f"port {busy_port}" in err[0]
    assert "in use" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "model_repository").exists()      # nothing started or exported


def test_kserve_ports_unused_by_the_kserve_backend_are_not_checked(tmp_path, busy_port):
    from serendip.platform.serving.ports import check_ports_free, port_free

    assert not port_free("127.0.0.1", busy_port) and port_free("127.0.0.1", _free())
    check_ports_free("127.0.0.1", [("--http-port", _free())])
    with pytest.raises(SerendipError, match="--grpc-port"):
        check_ports_free("127.0.0.1", [("--grpc-port", busy_port)])


def test_triton_readiness_is_tied_to_the_process_we_started(tmp_path):
    """Another server answers /v2/health/ready on our Triton port: wait_ready refuses it
    instead of reporting "backend triton"."""
    from serendip.platform.serving.ports import owns_port
    from serendip.platform.serving.triton import TritonServer

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    port = other.server_address[1]
    threading.Thread(target=other.serve_forever, daemon=True).start()
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        if owns_port(ours.pid, port) is None:
            pytest.skip("no /proc: ownership cannot be checked on this platform")
        ts = TritonServer(tmp_path, tmp_path / "work", http_port=port, grpc_port=_free())
        ts.proc = ours
        assert ts.ready()                    # the health check alone would be fooled
        with pytest.raises(SerendipError, match="another process answers") as e:
            ts.wait_ready(10)
        assert e.value.field == "--triton-http-port" and ours.poll() is not None
    finally:
        other.shutdown()
        other.server_close()
        if ours.poll() is None:
            ours.kill()
            ours.wait()


def test_harness_readiness_is_tied_to_the_serve_process(tmp_path):
    """The test/benchmark harness never takes another server's answer for its own serve."""
    from serendip.platform.serving.harness import ServeProcess
    from serendip.platform.serving.ports import owned_by_tree

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    port = other.server_address[1]
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        import os

        if owned_by_tree(os.getpid(), port) is None:
            pytest.skip("no /proc: ownership cannot be checked on this platform")
        assert owned_by_tree(os.getpid(), port) is True          # this test's own server
        server = ServeProcess(tmp_path, "kserve", ports=[port] + [_free() for _ in range(4)])
        with pytest.raises(RuntimeError):    # refused: another process, or serve's exit 2
            server.start(timeout_s=60)
        assert not server.alive()
    finally:
        other.shutdown()
        other.server_close()


def test_cluster_transformer_entry_point_refuses_a_busy_port(busy_port, capsys):
    from serendip.platform.serving.transformer import main

    assert main(["--predictor_host", "127.0.0.1:1", "--host", "127.0.0.1",
                 "--http_port", str(busy_port), "--grpc_port", str(_free())]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--http_port" in err[0] and "in use" in err[0]
