"""Start ``serendip serve`` in a subprocess on free loopback ports and talk to it through the
probe subprocess — for tests and benchmarks (servers and gRPC clients never share a process).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from serendip.platform.serving.ports import free_ports, owned_by_tree


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class ServeProcess:
    """``serendip serve --workdir W --backend B`` on free ports; a context manager."""

    workdir: Path
    backend: str
    extra: list[str] = field(default_factory=list)
    log: Path | None = None
    ports: list[int] = field(default_factory=lambda: free_ports(5))
    proc: subprocess.Popen | None = None
    startup_s: float | None = None

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.ports[1]}"

    @property
    def triton_http(self) -> str:
        return f"127.0.0.1:{self.ports[2]}"

    @property
    def triton_grpc(self) -> str:
        return f"127.0.0.1:{self.ports[3]}"

    def url(self, protocol: str, target: str = "recommend") -> str:
        """Where a model lives: ``recommend`` (or any model on the KServe fallback) on the
        KServe server; ``mllm``/``retriever`` on Triton for the triton backend."""
        if self.backend == "triton" and target in ("mllm", "retriever"):
            return self.triton_http if protocol == "http" else self.triton_grpc
        return self.http if protocol == "http" else self.grpc

    def start(self, timeout_s: float = 300.0) -> ServeProcess:
        p = self.ports
        cmd = [sys.executable, "-m", "serendip.cli", "serve", "--workdir", str(self.workdir),
               "--backend", self.backend, "--http-port", str(p[0]), "--grpc-port", str(p[1]),
               "--triton-http-port", str(p[2]), "--triton-grpc-port", str(p[3]),
               "--triton-metrics-port", str(p[4]), *self.extra]
        self.log = self.log or Path(self.workdir) / f"serve-{self.backend}-{p[0]}.log"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   PYTHONUNBUFFERED="1")
        t0 = time.monotonic()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serendip serve exited {self.proc.returncode}:\n"
                                   + self.log_tail())
            if _ready(p[0]) and (self.backend != "triton" or _ready(p[2])):
                mine = [owned_by_tree(self.proc.pid, port) for port in
                        (p[:1] if self.backend != "triton" else [p[0], p[2]])]
                if False in mine:       # another process answers on our port
                    self.stop()
                    raise RuntimeError(f"another process answers on port(s) {p}, not the "
                                       f"serve process {self.proc.pid}:\n" + self.log_tail())
                self.startup_s = time.monotonic() - t0
                return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"serendip serve not ready after {timeout_s} s:\n" + self.log_tail())

    def log_text(self) -> str:
        try:
            return Path(self.log).read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise RuntimeError(f"serendip serve ignored signal {sig} for {timeout_s} s") from None

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ------------------------------------------------------------------ probe requests
def tensor(name_or_data, shape=None, datatype: str = "BYTES", binary: bool = False) -> dict:
    """One input for a probe case; ``binary`` data (bytes) travels base64-encoded."""
    data = name_or_data
    if binary:
        return {"b64": [base64.b64encode(x).decode() for x in data], "shape": shape,
                "datatype": datatype}
    return {"data": data, "shape": shape if shape is not None else list(np.shape(data)),
            "datatype": datatype}


def probe(url: str, protocol: str, cases: list[dict] | None = None, load: dict | None = None,
          timeout_s: float = 600.0) -> dict:
    """Run the probe subprocess; returns its JSON answer."""
    req = {"url": url, "protocol": protocol, "cases": cases or [], "load": load}
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "serendip.platform.serving.probe"],
                       input=json.dumps(req), capture_output=True, text=True,
                       timeout=timeout_s, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"probe failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout)
