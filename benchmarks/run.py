"""Run benchmarks and write their results as JSON (``make bench``)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def available() -> list[str]:
    return sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {available()})")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "1")
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    names = args.names or available()
    unknown = set(names) - set(available())
    if unknown:
        print(f"unknown benchmark(s) {sorted(unknown)}; available: {available()}", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    summary = {}
    for name in names:
        print(f">> bench {name}", flush=True)
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        t0 = time.perf_counter()
        result = mod.run(quick=args.quick)
        result["_meta"] = {"wall_s": round(time.perf_counter() - t0, 2), "quick": args.quick,
                           "python": platform.python_version(), "cpus": os.cpu_count(),
                           "machine": platform.machine(),
                           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
        summary[name] = result
        print(json.dumps(result, indent=2), flush=True)
    if not args.names:
        (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
