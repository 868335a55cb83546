"""``serendip evaluate --online-sim``: run the online simulation on a work directory and write
its figures (JSON), the relative-change chart and a markdown table."""

from __future__ import annotations

import json
from pathlib import Path

from serendip.data.io import atomic_write_bytes, read_table
from serendip.evaluation.online_sim import METRICS, OnlineSimConfig, run_online_sim
from serendip.evaluation.recommenders import load_embeddings, make_recommender_factory, serendipitous_clusters
from serendip.evaluation.truth import GroundTruth
from serendip.mllm.workdir import latest_model_dir
from serendip.report import bar_chart_relative, markdown_table


def online_sim(workdir: str | Path, cfg: OnlineSimConfig, model_dir: str | Path | None = None,
               progress: bool = True) -> dict:
    from serendip.retriever import Retriever

    wd = Path(workdir)
    truth = GroundTruth.load(wd)
    items = read_table(wd, "items", columns=["item_id"])
    inter = read_table(wd, "interactions")
    ic = read_table(wd, "item_clusters").to_pandas()
    cluster_at = {r.item_id: (r.c1, r.c2, r.c3, r.c4) for r in ic.itertuples()}
    emb = load_embeddings(wd)
    retriever = Retriever.load(wd / "retriever")
    mdir = Path(model_dir) if model_dir else latest_model_dir(wd)
    from serendip.candidates import CandidateIndex

    index = CandidateIndex.build(read_table(wd, "item_clusters"), read_table(wd, "clusters"),
                                 cfg.level, cfg.delta)
    ser = serendipitous_clusters(wd, items.column("item_id").to_pylist(), mdir, index)
    factory = make_recommender_factory(wd, retriever, truth, cluster_at, emb, ser,
                                       cfg.level, cfg.delta)
    result = run_online_sim(factory, inter, truth, cluster_at, emb, items.num_rows, cfg,
                            progress=progress)
    summary = result.summary("exploitation")
    summary["config"] = {"n_contexts": cfg.n_contexts, "k": cfg.k, "seeds": list(cfg.seeds),
                         "level": cfg.level, "delta": cfg.delta,
                         "relevance_threshold": cfg.relevance_threshold}
    out = wd / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "online_sim.json", json.dumps(summary, indent=2).encode())
    bar_chart_relative(summary, list(METRICS), out / "online_sim.png")
    (out / "online_sim.md").write_text(online_sim_markdown(summary))
    return summary


def online_sim_markdown(summary: dict) -> str:
    rows = []
    for model, metrics in summary["models"].items():
        row = {"model": model}
        for name in METRICS:
            m = metrics[name]
            rel = m["rel_to_reference"]
            row[name] = (f"{m['mean']:.3f} ± {m['ci95']:.3f}"
                         + ("" if model == summary["reference"] or rel is None
                            else f" ({100 * rel:+.0f}%)"))
        rows.append(row)
    return (f"{summary['n_contexts']} replayed contexts per seed, seeds "
            f"{summary.get('config', {}).get('seeds')}; mean ± 95% CI over seeds, "
            f"(change vs {summary['reference']}).\n\n"
            + markdown_table(rows, ["model", *METRICS]))
