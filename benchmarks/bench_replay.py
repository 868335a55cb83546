"""Replay evaluation (``serendip evaluate --replay``): wall time of the replay stage once the
models exist (target: ml-100k in under 5 minutes on 2 cores), and the headline figures.

Data: by default the committed ml-100k subset (tests/data/ml-100k-subset) with a tree and a
small retriever built here first (not timed). With ``SERENDIP_REPLAY_WORKDIR`` (models trained
on the replay split, see :mod:`serendip.evaluation.replay`) and ``SERENDIP_REPLAY_DATA`` (the
full logs; ``SERENDIP_REPLAY_NAME`` labels them) it times that instead — e.g. the full
MovieLens-100k after ``serendip import recbole`` and the usual stages on ``--write-split``'s
output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from serendip.evaluation.replay import ReplayConfig, replay_stage, write_replay_split

SUBSET = Path(__file__).resolve().parent.parent / "tests" / "data" / "ml-100k-subset"


def _prepare(base: Path) -> tuple[Path, Path]:
    from serendip.data.recbole import import_recbole
    from serendip.embeddings import EmbeddingConfig
    from serendip.retriever import RetrieverConfig, retriever_stage
    from serendip.tree import ClusterConfig, cluster_stage

    raw, wd = base / "raw", base / "wd"
    import_recbole(SUBSET, raw)
    write_replay_split(raw, wd, ReplayConfig())
    cluster_stage(wd, wd, ClusterConfig(branching=(4, 3, 4, 2),
                                            embedding=EmbeddingConfig(text_encoder="tfidf")))
    retriever_stage(wd, wd, wd, RetrieverConfig(epochs=5, holdout=0, patience=0,
                                                torchscript=False), progress=False)
    return raw, wd


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    env_wd, env_data = os.environ.get("SERENDIP_REPLAY_WORKDIR"), os.environ.get(
        "SERENDIP_REPLAY_DATA")
    tmp = None
    try:
        if env_wd:
            wd, data = Path(env_wd), Path(env_data or env_wd)
            source = os.environ.get("SERENDIP_REPLAY_NAME") or f"{data} (models in {wd})"
        else:
            tmp = Path(tempfile.mkdtemp(prefix="bench-replay-"))
            data, wd = _prepare(tmp)
            source = "tests/data/ml-100k-subset (tree: tfidf 4/3/4/2, retriever 5 epochs)"
        out = Path(tempfile.mkdtemp(prefix="bench-replay-out-"))
        cfg = ReplayConfig(n_bootstrap=200 if quick else 500)
        t0 = time.perf_counter()
        s = replay_stage(wd, data, cfg, out_dir=out, progress=False)
        wall = time.perf_counter() - t0
        shutil.rmtree(out, ignore_errors=True)
        allm = s["subsets"]["all"]["arms"]
        figures = {arm: {m: (round(v["value"], 4) if v["value"] is not None else None)
                         for m, v in allm[arm].items() if isinstance(v, dict)}
                   for arm in allm}
        return {"data": source, "n_cases": s["n_cases"], "arms": s["arms"],
                "heldout_in_training": s["heldout_in_training"], "mllm": s["mllm"],
                "replay_s": round(wall, 2), "target_s": 300,
                "level": cfg.level, "delta": cfg.delta, "n_bootstrap": cfg.n_bootstrap,
                "all_cases": figures}
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
