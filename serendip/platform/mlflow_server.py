"""A local ``mlflow server`` for tests and benchmarks: bound to 127.0.0.1 on a free port, its own
sqlite backend store and artifact root, ``--serve-artifacts`` (clients upload and download
artifacts over HTTP, as against a platform team's server). Started in its own process group and
stopped by that PID. Point Serendip at it (or at any server) with
``MLFLOW_TRACKING_URI=http://HOST:PORT``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from serendip.platform.serving.ports import free_port


@dataclass
class MlflowServer:
    uri: str
    proc: subprocess.Popen
    root: Path
    log: Path

    def stop(self, kill: bool = False, grace: float = 3.0) -> None:
        """SIGTERM (or SIGKILL: a crash) to the server's process group — uvicorn runs as a
        child — and SIGKILL after ``grace`` seconds (uvicorn waits for open keep-alive
        connections on SIGTERM)."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=20)


def start_mlflow_server(root: str | os.PathLike, timeout: float = 120.0) -> MlflowServer:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--serve-artifacts",
           "--artifacts-destination", str(root / "artifacts"), "--workers", "1"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    # MLflow 3.x starts a job runner and ~8 Huey consumer processes for GenAI online scoring,
    # which a model registry does not use (half the start-up time on 2 cores); opt back in
    # by setting the variable yourself.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.pop("MLFLOW_TRACKING_URI", None)
    log = root / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=root, start_new_session=True)
    server = MlflowServer(f"http://127.0.0.1:{port}", proc, root, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({proc.returncode}): "
                               f"{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"mlflow server not ready after {timeout:.0f} s: {log.read_text()[-2000:]}")
