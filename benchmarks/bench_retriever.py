"""Sequence retriever: held-out hit rate / NDCG@10 within the true next cluster vs popularity
within that cluster (per level), training time, and retrieval latency (one request, a batch)."""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from serendip.data.synth import SynthConfig, write_synth
from serendip.retriever import Retriever, RetrieverConfig, train_retriever
from serendip.testing.truth import truth_clusters


def _latency(fn, n: int) -> dict:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    synth = (SynthConfig(items=600, users=200, interactions=8000, seed=7, branching=(2, 2, 3, 2))
             if quick else SynthConfig())                 # the default platform: 2000 items
    tmp = Path(tempfile.mkdtemp(prefix="bench-retriever-"))
    try:
        write_synth(synth, tmp)
        _, ic = truth_clusters(tmp)
        inter = pq.read_table(tmp / "interactions.parquet")
        cfg = RetrieverConfig(holdout=3)
        t0 = time.perf_counter()
        result = train_retriever(inter, ic, cfg, tmp / "retriever", progress=False)
        train_s = time.perf_counter() - t0
        ev = result.metrics["eval"]
        out: dict = {"catalogue_items": synth.items, "interactions": synth.interactions,
                     "train_s": round(train_s, 2), "best_epoch": result.metrics["best_epoch"],
                     "held_out_cases": ev["n_cases"], "gate_level": cfg.eval_level}
        for level in (1, 2, 3, 4):
            e = ev[f"level{level}"]
            out[f"level{level}"] = {
                "model_hit@10": round(e["model"]["hit@10"], 4),
                "popularity_hit@10": round(e["popularity"]["hit@10"], 4),
                "model_ndcg@10": round(e["model"]["ndcg@10"], 4),
                "popularity_ndcg@10": round(e["popularity"]["ndcg@10"], 4),
                "ndcg_lift": round(e["model"]["ndcg@10"] / max(e["popularity"]["ndcg@10"], 1e-9),
                                   3)}
        r = Retriever.load(tmp / "retriever")
        rng = random.Random(0)
        users = sorted(result.retriever.item_ids)
        l3 = sorted({c for c in ic.column("c3").to_pylist()})
        hist = [rng.sample(users, 20) for _ in range(64)]
        cids = [rng.choice(l3) for _ in range(64)]
        out["retrieve_one_k10"] = _latency(lambda: r.retrieve(hist[0], cids[0], 10), 300)
        batch = _latency(lambda: r.retrieve_batch(hist, cids, 10), 30)
        out["retrieve_batch64_k10"] = {**batch, "requests_per_s": round(64 / batch["p50_ms"]
                                                                         * 1000, 1)}
        scripted = torch.jit.load(str(tmp / "retriever" / "retriever.pt"))
        seq = torch.tensor([[r.pos[i] + 1 for i in h] for h in hist])
        lengths = torch.full((64,), 20, dtype=torch.long)
        with torch.inference_mode():
            out["torchscript_batch64_logits"] = _latency(lambda: scripted(seq, lengths), 30)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
