"""Step caching for multi-stage runs: a step is skipped when its fingerprint (config + input
files' sizes and mtimes) matches the one recorded after its last successful run and its outputs
still exist. Re-running the demo therefore reuses finished stages."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from serendip.data.io import atomic_write_bytes


def fingerprint(config: Any, inputs: Iterable[str | os.PathLike]) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for p in sorted(str(x) for x in inputs):
        path = Path(p)
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                st = f.stat()
                h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class Steps:
    """Runs named steps under ``<workdir>/.steps`` with timing and cache hits printed."""

    def __init__(self, workdir: str | os.PathLike, echo: Callable[[str], None] = print):
        self.dir = Path(workdir) / ".steps"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.echo = echo
        self.timings: dict[str, float] = {}   # seconds of the run that made the outputs
        self.cached: list[str] = []

    def run(self, name: str, fn: Callable[[], Any], *, config: Any = None,
            inputs: Iterable[str | os.PathLike] = (), outputs: Iterable[str | os.PathLike] = ()
            ) -> Any:
        outputs = list(outputs)
        fp = fingerprint(config, inputs)
        stamp = self.dir / f"{name}.json"
        if stamp.exists() and outputs and all(Path(o).exists() for o in outputs):
            rec = json.loads(stamp.read_text())
            if rec.get("fingerprint") == fp:
                self.echo(f"[{name}] cached ({rec.get('seconds', 0):.1f} s last time)")
                self.cached.append(name)
                self.timings[name] = float(rec.get("seconds", 0.0))
                return rec.get("result")
        self.echo(f"[{name}] running ...")
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        self.timings[name] = dt
        atomic_write_bytes(stamp, json.dumps({"fingerprint": fp, "seconds": dt,
                                              "result": result}, default=str).encode())
        self.echo(f"[{name}] done in {dt:.1f} s")
        return result
