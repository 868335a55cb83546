"""The replay stage on a work directory (``serendip evaluate --replay``): writes
``replay.json`` and ``replay.md``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa

from serendip.candidates import CandidateIndex
from serendip.errors import SerendipError
from serendip.evaluation.rankings import mllm_cluster_rankings
from serendip.evaluation.replay.arms import build_arms
from serendip.evaluation.replay.config import ReplayConfig
from serendip.evaluation.replay.metrics import run_replay
from serendip.evaluation.replay.report import replay_markdown
from serendip.evaluation.replay.split import heldout_leak, holdout_mask, replay_cases


def replay_stage(workdir: str | Path, data_dir: str | Path | None = None,
                 cfg: ReplayConfig | None = None, predictor=None,
                 out_dir: str | Path | None = None, *, progress: bool = True) -> dict:
    """Replay the held-out transitions of ``data_dir`` (default: ``workdir``) through the
    models of ``workdir`` (retriever/, embeddings, clusters, and the MLLM: ``predictor``, a
    loaded ``ClusterPredictor``, if given, else item_serendipity.parquet); write
    ``replay.json`` and ``replay.md`` to ``out_dir`` (default ``<workdir>/evaluation``).
    Returns the summary. ``progress``: a progress bar over the arms (a run-time flag).

    Raises:
        SerendipError: a missing model or table (names the stage to run), no held-out cases.
    """
    from serendip.data.io import atomic_write_bytes, read_table
    from serendip.evaluation.recommenders import load_embeddings
    from serendip.retriever import Retriever

    cfg = cfg or ReplayConfig()
    t0 = time.perf_counter()
    wd = Path(workdir)
    data = Path(data_dir or wd)
    if not (wd / "retriever" / "config.json").exists():
        raise SerendipError(f"{wd / 'retriever'} is missing", field="--workdir",
                            fix=f"run `serendip train-retriever --workdir {wd}` first")
    items = read_table(data, "items", columns=["item_id"])
    full = read_table(data, "interactions", refs={"items": items})
    mask = holdout_mask(full, cfg)
    train = full.filter(pa.array(~mask))
    held = full.filter(pa.array(mask))
    trained_on = read_table(wd, "interactions") if data != wd else full
    leak = heldout_leak(trained_on, held)
    clusters = read_table(wd, "clusters")
    item_clusters = read_table(wd, "item_clusters")
    index = CandidateIndex.build(item_clusters, clusters, cfg.level, cfg.delta)
    emb = load_embeddings(wd)
    retriever = Retriever.load(wd / "retriever")
    cases = replay_cases(full, mask)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        from serendip.data.io import has_table

        bar = tqdm(total=4 + (predictor is not None or has_table(wd, "item_serendipity")),
                   desc="replay arms", unit="arm")

    def say(name: str) -> None:
        if bar is not None:
            bar.set_postfix_str(name)
            bar.update(1)

    mllm, mllm_stats = None, None
    from serendip.data.io import has_table

    if has_table(wd, "item_serendipity") or predictor is not None:
        mllm, mllm_stats = mllm_cluster_rankings(wd, [c.context for c in cases], index,
                                                 predictor, cfg.mllm_k,
                                                 use_scored=predictor is None)
    arms = build_arms(cases, retriever, index, emb, train, cfg, mllm, say)
    res = run_replay(cases, arms, index, emb, train, items.num_rows, cfg)
    if bar is not None:
        bar.close()
    from serendip.config import to_dict

    summary = {"config": to_dict(cfg), "workdir": str(wd), "data": str(data),
               "n_cases": len(cases), "train_transitions": train.num_rows,
               "heldout_in_training": leak, "mllm": mllm_stats,
               "arms": list(arms), "subsets": res.summary,
               "seconds": round(time.perf_counter() - t0, 1)}
    out = Path(out_dir) if out_dir else wd / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "replay.json", json.dumps(summary, indent=2).encode())
    md = replay_markdown(summary, cfg)
    atomic_write_bytes(out / "replay.md", (md + "\n").encode())
    summary["markdown"] = md
    return summary
