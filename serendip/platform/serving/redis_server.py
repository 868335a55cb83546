"""A local ``redis-server`` for Feast's Redis online store: bound to 127.0.0.1 on a free (or
given) port, no persistence (no RDB snapshots, no AOF), stopped by PID. Tests use it as a
fixture; ``make redis`` runs it in the foreground for a user (``python -m
serendip.platform.serving.redis_server``), printing the two variables that point Serendip at it.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from serendip.errors import ConfigError
from serendip.platform.serving.ports import free_port


def redis_server_binary() -> str | None:
    """Path of ``redis-server`` on PATH (Debian: ``apt-get install redis-server``), or None."""
    return shutil.which("redis-server")


@dataclass
class RedisServer:
    """One ``redis-server`` process; a context manager.

    ``connection_string`` is the value for ``FEAST_REDIS_CONNECTION_STRING``.
    """

    port: int = 0                      # 0: a free port
    host: str = "127.0.0.1"
    workdir: Path | None = None        # its cwd (nothing is written there: no persistence)
    proc: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def connection_string(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        binary = redis_server_binary()
        if binary is None:
            raise ConfigError("redis-server is not installed", field="redis-server",
                              fix="apt-get install -y redis-server")
        return [binary, "--bind", self.host, "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no",
                "--loglevel", "warning"]

    def ping(self, timeout_s: float = 0.5) -> bool:
        """PING over a raw socket (no client library needed): True on ``+PONG``."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout_s) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout_s: float = 20.0) -> RedisServer:
        """Launch and wait for PONG from *this* process (exits early if it died, e.g. the
        port was taken)."""
        if self.port == 0:
            self.port = free_port(self.host)
        self.proc = subprocess.Popen(self.command(), cwd=str(self.workdir or Path.cwd()),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace").strip()[-500:]
                raise ConfigError(f"redis-server exited with code {self.proc.returncode}: {out}",
                                  field="redis port", fix="pick a free port")
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise ConfigError(f"redis-server not answering after {timeout_s:.0f} s",
                          field="redis-server", fix="check the redis-server installation")

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM by PID, SIGKILL after ``timeout_s``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="serendip-redis",
                                description="a local redis-server for Feast (no persistence)")
    p.add_argument("--port", type=int, default=6379)
    args = p.parse_args(argv)
    try:
        server = RedisServer(port=args.port).start()
    except ConfigError as e:
        print(f"serendip redis: {e}", file=sys.stderr)
        return 2
    print(f"redis-server pid {server.proc.pid} on 127.0.0.1:{server.port} (no persistence); "
          "point Serendip at it with:\n"
          "  export SERENDIP_FEAST_ONLINE_STORE=redis\n"
          f"  export FEAST_REDIS_CONNECTION_STRING={server.connection_string}\n"
          "Ctrl-C stops it.", flush=True)
    try:
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
