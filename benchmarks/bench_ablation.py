"""Ablation runner: runs trained in worker processes vs one after the other.

The same ablation (the thumbnail group: two CoT variants, batch 32) runs twice in fresh child
processes on one small synthetic platform: ``workers=1`` with every CPU thread given to
torch (the naive way: one run at a time, all cores), then ``workers=0`` (one run per core,
the threads shared). Reported: wall seconds of each, their ratio, whether the held-out
curves (recall, match rate, with and without the trie) are identical, and the largest
training-loss difference (the thread count changes float reduction order).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, os, sys, time
import torch
torch.set_num_threads(os.cpu_count() or 1)
from serendip.curation import CurationConfig, curate
from serendip.data.io import read_table
from serendip.data.synth import SynthConfig, write_synth
from serendip.mllm.ablation import AblationConfig, run_ablation
from serendip.mllm.config import FinetuneConfig
from serendip.prompts import PromptConfig
from serendip.testing.truth import truth_clusters

data, out, workers, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
write_synth(SynthConfig(items=600, users=200, interactions=8000, seed=7,
                        branching=(2, 2, 3, 2)), data, with_ceiling=False)
items, inter = read_table(data, "items"), read_table(data, "interactions")
clusters, item_clusters = truth_clusters(data)

def build(prompt: PromptConfig):
    return curate(items, inter, clusters, item_clusters, CurationConfig(prompt=prompt)).examples

cfg = AblationConfig(groups=("thumbnail",), steps=steps, eval_every=steps,
                     finetune=FinetuneConfig(eval_max_examples=32))
t0 = time.perf_counter()
res = run_ablation(build, clusters, cfg, out, items=items, progress=False, base_dir=data,
                   workers=workers)
print(json.dumps({"wall_s": time.perf_counter() - t0,
                  "histories": {k: v["history"] for k, v in res["results"].items()}}))
"""


def _child(workers: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run([sys.executable, "-c", CHILD, f"{tmp}/data", f"{tmp}/out",
                            str(workers), str(steps)], capture_output=True, text=True,
                           check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def _metrics(res: dict) -> dict:
    return {k: [{m: v for m, v in row.items() if m != "train_loss"} for row in hist]
            for k, hist in res["histories"].items()}


def run(quick: bool = False) -> dict:
    t0 = time.perf_counter()
    steps = 20 if quick else 240
    seq, par = _child(1, steps), _child(0, steps)
    return {"runs": 2, "steps_per_run": steps, "batch": 32,
            "sequential_all_threads_s": round(seq["wall_s"], 1),
            "workers_one_per_core_s": round(par["wall_s"], 1),
            "speedup": round(seq["wall_s"] / par["wall_s"], 2),
            "same_heldout_curves": _metrics(seq) == _metrics(par),
            "max_train_loss_diff": max(abs(a["train_loss"] - b["train_loss"])
                                       for k in seq["histories"]
                                       for a, b in zip(seq["histories"][k], par["histories"][k])),
            "seconds": round(time.perf_counter() - t0, 1)}
