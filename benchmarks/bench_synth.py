"""``synth`` for 100k items and 1M interactions (target < 60 s on 2 cores, < 4 GB).

Runs in a child process so its peak RSS is measured alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

CHILD = """
import json, resource, sys, time
from serendip.data.synth import SynthConfig, write_synth
items, users, inter, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
t0 = time.perf_counter()
write_synth(SynthConfig(items=items, users=users, interactions=inter, seed=0), out,
            with_ceiling=False)
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(quick: bool = False) -> dict:
    items, users, inter = (10_000, 5_000, 100_000) if quick else (100_000, 50_000, 1_000_000)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(items), str(users), str(inter), out],
                              check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"items": items, "users": users, "interactions": inter,
            "synth_seconds": round(child["seconds"], 2), "process_wall_s": round(wall, 2),
            "peak_rss_mb": round(child["peak_rss_mb"], 1),
            "target": {"seconds": 60, "peak_rss_mb": 4096},
            "meets_target": child["seconds"] < 60 and child["peak_rss_mb"] < 4096}
