"""A small, complete *served* work directory in seconds, for serving tests and benchmarks.

Serving only needs the artifacts' shapes to be right, not good models, so this skips the slow
stages: clusters come from the synthetic platform's ground truth (path ids, as the cluster
tree writes them), the MLLM is the tiny default VLM with random weights (trie-constrained, so
every answer is still a valid cluster), the retriever trains for a few epochs, and
``item_serendipity`` is scored for the most popular items only — the rest exercise the
"not scored yet → ask the MLLM" path. ``serendip demo`` builds the real thing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from serendip.data.io import atomic_write_bytes, read_table, write_table
from serendip.prompts import PromptConfig


@dataclass
class FixtureConfig:
    items: int = 600
    users: int = 200
    interactions: int = 8000
    branching: tuple[int, int, int, int] = (2, 2, 3, 2)
    seed: int = 7
    level: int = 3                       # level of the serendipitous clusters the MLLM names
    scored_fraction: float = 0.7         # most popular items written to item_serendipity
    retriever_epochs: int = 3
    strategy: str = "multimodal"
    n_frames: int = 2


def truth_clusters(synth_dir: str | Path) -> tuple[pa.Table, pa.Table]:
    """(clusters, item_clusters) from the synthetic ground truth, with path ids."""
    tax = pq.read_table(Path(synth_dir) / "truth" / "taxonomy.parquet").to_pylist()
    topics = pq.read_table(Path(synth_dir) / "truth" / "item_topics.parquet").to_pylist()
    path: dict[tuple[int, int], str] = {}
    for level in (1, 2, 3, 4):
        nodes = sorted((r for r in tax if r["level"] == level), key=lambda r: r["node"])
        rank: dict = {}
        for r in nodes:
            parent = path.get((level - 1, r["parent"])) if level > 1 else None
            i = rank.setdefault(parent, 0)
            rank[parent] = i + 1
            path[(level, r["node"])] = f"{parent}.{i}" if parent else str(i)
    keys = ("l1", "l2", "l3", "leaf")
    rows = [{"item_id": t["item_id"], **{f"c{j + 1}": path[(j + 1, t[k])]
                                         for j, k in enumerate(keys)}} for t in topics]
    sizes: dict[str, int] = {}
    for r in rows:
        for j in range(1, 5):
            sizes[r[f"c{j}"]] = sizes.get(r[f"c{j}"], 0) + 1
    clusters = [{"cluster_id": path[(r["level"], r["node"])], "level": r["level"],
                 "parent_id": path[(r["level"], r["node"])].rsplit(".", 1)[0]
                 if r["level"] > 1 else None,
                 "description": r["name"], "size": sizes.get(path[(r["level"], r["node"])], 0),
                 "traffic": sizes.get(path[(r["level"], r["node"])], 0)} for r in tax]
    return pa.Table.from_pylist(clusters), pa.Table.from_pylist(rows)


def build_serving_workdir(workdir: str | Path, cfg: FixtureConfig | None = None) -> Path:
    """Write items/interactions, clusters, ``mllm/serving-tiny``, ``retriever/`` and
    ``item_serendipity.parquet`` into ``workdir``; returns it. Deterministic under the seed."""
    import torch

    from serendip.data.synth import SynthConfig, write_synth
    from serendip.mllm.inference import ClusterPredictor
    from serendip.mllm.tiny import build_tiny_vlm, tokenizer_corpus
    from serendip.retriever import RetrieverConfig, train_retriever

    cfg = cfg or FixtureConfig()
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    write_synth(SynthConfig(items=cfg.items, users=cfg.users, interactions=cfg.interactions,
                            seed=cfg.seed, branching=cfg.branching), wd)
    items = read_table(wd, "items")
    clusters, item_clusters = truth_clusters(wd)
    write_table(wd, "clusters", clusters)
    write_table(wd, "item_clusters", item_clusters, refs={"items": items})
    atomic_write_bytes(wd / "curation.json", json.dumps(
        {"level": cfg.level, "delta": 1, "strategy": cfg.strategy, "n_frames": cfg.n_frames,
         "use_thumbnail": False}).encode())

    torch.manual_seed(cfg.seed)
    cand = [r for r in clusters.to_pylist() if r["level"] == cfg.level]
    texts = tokenizer_corpus(items.column("title").to_pylist(), [c["description"] for c in cand])
    model, processor = build_tiny_vlm(texts)
    predictor = ClusterPredictor(model, processor, [c["cluster_id"] for c in cand],
                                 [c["description"] for c in cand],
                                 PromptConfig(strategy=cfg.strategy, n_frames=cfg.n_frames),
                                 cfg.level, image_size=64, batch_size=32)
    mllm_dir = predictor.save(wd / "mllm" / "serving-tiny")

    train_retriever(read_table(wd, "interactions"), item_clusters,
                    RetrieverConfig(epochs=cfg.retriever_epochs, dim=32, progress=False,
                                    torchscript=False, seed=cfg.seed), wd / "retriever")

    # item_serendipity for the most popular items (the rest are "not scored yet")
    rows = sorted(items.to_pylist(), key=lambda r: (-r["impressions"], r["item_id"]))
    scored = rows[: int(len(rows) * cfg.scored_fraction)]
    by_item = {r["item_id"]: r for r in item_clusters.to_pylist()}
    desc = {c["cluster_id"]: c["description"] for c in clusters.to_pylist()}
    inputs = [{"title": r["title"], "thumbnail": r["thumbnail"], "frames": r["frames"],
               "context_description": desc[by_item[r["item_id"]][f"c{cfg.level}"]]}
              for r in scored]
    loaded = ClusterPredictor.load(mllm_dir)
    preds = loaded.predict(inputs, k=2)
    now = dt.datetime.now(dt.timezone.utc)
    table = pa.Table.from_pylist([{
        "item_id": r["item_id"], "cluster_ids": [p.cluster_id for p in ps],
        "descriptions": [p.description for p in ps], "scores": [p.score for p in ps],
        "model_version": loaded.model_version,
        "content_hash": hashlib.sha256(r["title"].encode()).hexdigest()[:16],
        "scored_at": now} for r, ps in zip(scored, preds)])
    write_table(wd, "item_serendipity", table, refs={"items": items})
    return wd


def scored_item_ids(workdir: str | Path) -> list[str]:
    """Items of ``item_serendipity`` (the "feature store hit" population), most popular first."""
    return read_table(workdir, "item_serendipity", columns=["item_id"]).column(
        "item_id").to_pylist()
