"""A work directory ready for ``serendip score`` in seconds, for scoring tests and benchmarks.

Scoring only needs the artifacts' shapes and a deterministic model, not a good one: clusters come
from the synthetic ground truth (path ids, :func:`serendip.serving_fixture.truth_clusters`), a
saved ``cluster_tree/`` holds per-cluster centroids of a cheap topic embedding
(:func:`topic_embedding`) so new items can be assigned, and the MLLM is the tiny default VLM with
random weights scaled up (×``sharpen``) so that its trie-constrained answers depend on the
input instead of collapsing onto one cluster. ``serendip demo`` builds the real thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from serendip.data.io import has_table, read_table, write_table
from serendip.prompts import PromptConfig
from serendip.serving_fixture import FixtureConfig, truth_clusters


@dataclass
class ScoringFixtureConfig(FixtureConfig):
    """The serving fixture's platform; one frame per item, and the MLLM's weights × sharpen."""

    n_frames: int = 1
    sharpen: float = 3.0


def topic_embedding(workdir: str | Path, items: pa.Table) -> np.ndarray:
    """One-hot of the item's true leaf topic (truth/), the embedding the fixture's tree uses.
    Items unknown to truth/ (copies made by a test) take the topic of the id before ``~``."""
    topics = pq.read_table(Path(workdir) / "truth" / "item_topics.parquet").to_pydict()
    leaf = dict(zip(topics["item_id"], topics["leaf"]))
    n_leaves = max(leaf.values()) + 1
    ids = items.column("item_id").to_pylist()
    out = np.zeros((len(ids), n_leaves), np.float32)
    for i, item in enumerate(ids):
        out[i, leaf[item.split("~")[0]]] = 1.0
    return out


def save_truth_tree(workdir: str | Path, clusters: pa.Table, item_clusters: pa.Table,
                    emb: np.ndarray) -> Path:
    """A :class:`~serendip.tree.ClusterTree` whose centroids are member means of ``emb``."""
    from serendip.tree import ClusterConfig, ClusterTree

    rows = clusters.to_pylist()
    by_level = [sorted((r for r in rows if r["level"] == lvl),
                       key=lambda r: tuple(int(x) for x in r["cluster_id"].split(".")))
                for lvl in (1, 2, 3, 4)]
    ids = [[r["cluster_id"] for r in lvl] for lvl in by_level]
    centroids = []
    for lvl, level_ids in enumerate(ids, start=1):
        col = np.asarray(item_clusters.column(f"c{lvl}").to_pylist(), dtype=object)
        centroids.append(np.stack([emb[col == cid].mean(axis=0) for cid in level_ids]))
    branching = tuple(max(int(c.rsplit(".", 1)[-1]) for c in level) + 1 for level in ids)
    tree = ClusterTree(config=ClusterConfig(branching=branching), ids=ids,
                       centroids=[c.astype(np.float32) for c in centroids],
                       descriptions={r["cluster_id"]: r["description"] for r in rows})
    return tree.save(Path(workdir) / "cluster_tree")


def build_scoring_workdir(workdir: str | Path, cfg: ScoringFixtureConfig | None = None
                          ) -> tuple[Path, Path]:
    """Write items/interactions (synthetic), clusters, item_clusters, cluster_tree/ and a tiny
    saved MLLM into ``workdir``; returns (workdir, model_dir). Deterministic under the seed."""
    import torch

    from serendip.data.synth import SynthConfig, write_synth
    from serendip.mllm.inference import ClusterPredictor
    from serendip.mllm.tiny import build_tiny_vlm, tokenizer_corpus

    cfg = cfg or ScoringFixtureConfig()
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    if not has_table(wd, "items"):
        write_synth(SynthConfig(items=cfg.items, users=cfg.users, interactions=cfg.interactions,
                                seed=cfg.seed, branching=cfg.branching), wd)
    items = read_table(wd, "items")
    clusters, item_clusters = truth_clusters(wd)
    write_table(wd, "clusters", clusters)
    write_table(wd, "item_clusters", item_clusters, refs={"items": items})
    save_truth_tree(wd, clusters, item_clusters, topic_embedding(wd, item_clusters))

    torch.manual_seed(cfg.seed)
    cand = [r for r in clusters.to_pylist() if r["level"] == cfg.level]
    texts = tokenizer_corpus(items.column("title").to_pylist(), [c["description"] for c in cand])
    model, processor = build_tiny_vlm(texts)
    with torch.no_grad():
        for name, w in model.named_parameters():
            if w.dim() >= 2 and "norm" not in name:
                w.mul_(cfg.sharpen)
    predictor = ClusterPredictor(model, processor, [c["cluster_id"] for c in cand],
                                 [c["description"] for c in cand],
                                 PromptConfig(strategy=cfg.strategy, n_frames=cfg.n_frames),
                                 cfg.level, image_size=64, batch_size=32)
    model_dir = predictor.save(wd / "mllm" / "tiny")
    return wd, model_dir
