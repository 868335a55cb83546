"""Run a real Triton Inference Server locally: the ``tritonserver`` binary of the
``nvidia-pytriton`` 0.7.0 wheel (Triton 2.51), in its own numpy<2 venv (``make triton-venv``).

What makes it work on a plain CPU machine:

* ``LD_LIBRARY_PATH`` = the venv interpreter's own libpython dir (else the Python-backend stub
  fails with ``'_thread.RLock' object has no attribute '_recursion_count'``) + the wheel's
  ``nvidia_pytriton.libs``;
* a backend directory with ``libtriton_python.so``, ``triton_python_backend_utils.py`` and the
  ``triton_python_backend_stub`` of the venv's Python version;
* the venv's ``bin`` first on ``PATH``: model code runs under the first ``python3`` found
  (PYTHONPATH is ignored), and numpy 2 makes the stub return empty tensors;
* SIGTERM to stop (SIGINT may not).

The venv is built by ``make triton-venv`` (``SERENDIP_TRITON_VENV`` overrides its path).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from serendip.errors import SerendipError

DEFAULT_VENV = ".venv-triton"


def default_venv() -> Path:
    """``$SERENDIP_TRITON_VENV``, else ``.venv-triton`` next to the repository root."""
    env = os.environ.get("SERENDIP_TRITON_VENV")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / DEFAULT_VENV


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of a pytriton-wheel Triton live."""

    venv: Path
    python: Path
    server: Path
    backend_src: Path
    stub: Path
    libs: Path
    python_libdir: Path

    @classmethod
    def find(cls, venv: str | os.PathLike | None = None) -> TritonInstall:
        v = Path(venv) if venv else default_venv()
        python = v / "bin" / "python3"
        fix = "run `make triton-venv` (nvidia-pytriton 0.7.0 + numpy<2 + serendip), or set " \
              "SERENDIP_TRITON_VENV, or use `serendip serve --backend kserve`"
        if not python.exists():
            raise SerendipError(f"no Triton venv at {v}", field="triton_venv", fix=fix)
        try:
            out = subprocess.run(
                [str(python), "-c", "import json, sys, sysconfig, pytriton, numpy, serendip; "
                 "print(json.dumps([sysconfig.get_paths()['purelib'], "
                 "sysconfig.get_config_var('LIBDIR'), '%d.%d' % sys.version_info[:2], "
                 "numpy.__version__, sysconfig.get_config_var('INSTSONAME') or '']))"],
                capture_output=True, text=True, timeout=120, check=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            err = getattr(e, "stderr", "") or ""
            raise SerendipError(f"the Triton venv {v} is incomplete: {err.strip()[-300:]}",
                                field="triton_venv", fix=fix) from None
        site, libdir, pyver, np_version, soname = json.loads(
            out.stdout.strip().splitlines()[-1])
        if not soname.startswith("libpython") or not (Path(libdir) / soname).exists():
            raise SerendipError(f"the Triton venv's Python ({pyver}) has no shared libpython "
                                f"({soname or 'static build'} not in {libdir}); the Python "
                                "backend stub must load the interpreter's own libpython",
                                field="triton_venv",
                                fix="build the venv from a Python with --enable-shared "
                                    "(pyenv: PYTHON_CONFIGURE_OPTS=--enable-shared; official "
                                    "python images are shared)")
        if int(np_version.split(".")[0]) >= 2:
            raise SerendipError(f"the Triton venv has numpy {np_version}; the Python backend "
                                "stub needs numpy<2 (else empty tensors)",
                                field="triton_venv", fix=fix)
        root = Path(site) / "pytriton" / "tritonserver"
        install = cls(venv=v, python=python, server=root / "bin" / "tritonserver",
                      backend_src=root / "backends" / "python",
                      stub=root / "python_backend_stubs" / pyver / "triton_python_backend_stub",
                      libs=Path(site) / "nvidia_pytriton.libs", python_libdir=Path(libdir))
        for p in (install.server, install.backend_src, install.stub, install.libs):
            if not p.exists():
                raise SerendipError(f"{p} is missing from the Triton venv", field="triton_venv",
                                    fix=fix)
        return install

    def backend_dir(self, dest: str | os.PathLike) -> Path:
        """``<dest>/python`` with the backend library, its utils and the matching stub."""
        d = Path(dest) / "python"
        d.mkdir(parents=True, exist_ok=True)
        for src in (*self.backend_src.glob("*.so"), *self.backend_src.glob("*.py"), self.stub):
            target = d / src.name
            if not target.exists() or target.stat().st_size != src.stat().st_size:
                shutil.copy2(src, target)
        return Path(dest)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(self.python_libdir), str(self.libs), env.get("LD_LIBRARY_PATH"))
            if p)
        env["VIRTUAL_ENV"] = str(self.venv)
        env.pop("PYTHONHOME", None)
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TRANSFORMERS_OFFLINE", "1")
        env.setdefault("OMP_NUM_THREADS", "1")
        return env


def triton_available(venv: str | os.PathLike | None = None) -> bool:
    try:
        TritonInstall.find(venv)
        return True
    except SerendipError:
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the child gets SIGTERM when the parent dies (no orphaned tritonserver)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class TritonServer:
    """One ``tritonserver`` process bound to ``host`` (loopback by default)."""

    repository: Path
    work: Path                                 # backend copy + log live here
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    venv: str | os.PathLike | None = None
    log_verbose: int = 0
    proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        return Path(self.work) / "triton.log"

    def command(self, install: TritonInstall) -> list[str]:
        backends = install.backend_dir(Path(self.work) / "backends")
        return [str(install.server), "--model-repository", str(Path(self.repository).resolve()),
                "--backend-directory", str(backends.resolve()),
                "--http-address", self.host, "--http-port", str(self.http_port),
                "--grpc-address", self.host, "--grpc-port", str(self.grpc_port),
                "--metrics-address", self.host, "--metrics-port", str(self.metrics_port),
                "--allow-gpu-metrics", "false", "--strict-readiness", "true",
                "--pinned-memory-pool-byte-size", "0",
                "--exit-timeout-secs", "10", "--log-verbose", str(self.log_verbose)]

    def start(self, timeout_s: float = 180.0) -> TritonServer:
        """Launch and wait until every model is ready."""
        self.launch()
        self.wait_ready(timeout_s)
        return self

    def launch(self) -> TritonServer:
        """Start the process and return at once (models load while the caller works)."""
        install = TritonInstall.find(self.venv)
        if not (Path(self.repository) / "mllm" / "config.pbtxt").exists():
            raise SerendipError(f"{self.repository} is not an exported model repository",
                                field="model_repository", fix="run `serendip export` first")
        Path(self.work).mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(install), env=install.env(), stdout=log,
                                     stderr=subprocess.STDOUT, cwd=str(self.work),
                                     preexec_fn=_die_with_parent)
        log.close()
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready",
                                        timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SerendipError(f"tritonserver exited with code {self.proc.returncode}:\n"
                                    f"{self.log_tail()}", field="triton",
                                    fix=f"see {self.log_path}")
            if self.ready():
                self._check_owned()
                return
            time.sleep(0.2)
        self.stop()
        raise SerendipError(f"tritonserver not ready after {timeout_s:.0f} s:\n{self.log_tail()}",
                            field="triton", fix=f"see {self.log_path}")

    def _check_owned(self) -> None:
        """The server answering on our ports must be the process we started (else another
        work directory's Triton would answer our health checks and requests)."""
        from serendip.platform.serving.ports import describe_pids, listener_pids, owns_port

        if self.proc is None:
            return
        for option, port in (("--triton-http-port", self.http_port),
                             ("--triton-grpc-port", self.grpc_port)):
            if owns_port(self.proc.pid, port) is False:
                others = describe_pids([p for p in (listener_pids(port) or [])
                                        if p != self.proc.pid])
                self.stop()
                raise SerendipError(f"another process answers on port {port}{others}, not the "
                                    f"tritonserver started here (pid {self.proc.pid})",
                                    field=option, fix=f"stop it or pick a free port with {option}")

    def log_tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM (Triton's clean shutdown), then SIGKILL after ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            print(f"tritonserver did not stop in {timeout_s:.0f} s; killing it", file=sys.stderr)
            self.proc.kill()
            return self.proc.wait(5)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
