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
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from serendip.curation import CurationConfig, CurationManifest, write_curation
from serendip.data.io import read_table, write_table
from serendip.prompts import PromptConfig
from serendip.testing.truth import write_truth_workdir


@dataclass
class FixtureConfig:
    """The serving test fixture's synthetic platform and models; validated on construction."""

    items: int = field(default=600, metadata={"help": "synthetic items; >= 1"})
    users: int = field(default=200, metadata={"help": "synthetic users; >= 1"})
    interactions: int = field(default=8000, metadata={
        "help": "synthetic interactions; >= users"})
    branching: tuple[int, int, int, int] = field(default=(2, 2, 3, 2), metadata={
        "help": "children per level of the synthetic taxonomy, [l1, l2, l3, l4]"})
    seed: int = field(default=7, metadata={"help": "seed of the synthetic platform"})
    level: int = field(default=3, metadata={
        "help": "tree level of the serendipitous clusters the MLLM names; 1..4"})
    scored_fraction: float = field(default=0.7, metadata={
        "help": "share of the most popular items written to item_serendipity; in [0, 1]"})
    retriever_epochs: int = field(default=3, metadata={
        "help": "retriever training epochs; >= 1"})
    strategy: str = field(default="multimodal", metadata={
        "help": "prompt strategy of the fixture's MLLM: text | video | multimodal | cot"})
    n_frames: int = field(default=2, metadata={"help": "frames per item in the prompt; >= 1"})

    def __post_init__(self) -> None:
        from serendip.errors import ConfigError

        for name in ("items", "users", "retriever_epochs", "n_frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}", field=name, fix="use >= 1")
        if not 1 <= self.level <= 4:
            raise ConfigError(f"level={self.level}", field="level", fix="use 1..4")
        if not 0 <= self.scored_fraction <= 1:
            raise ConfigError(f"scored_fraction={self.scored_fraction}",
                              field="scored_fraction", fix="use a share in [0, 1]")
        PromptConfig(strategy=self.strategy, n_frames=self.n_frames)


def build_serving_workdir(workdir: str | Path, cfg: FixtureConfig | None = None) -> Path:
    """Write items/interactions, clusters, ``mllm/serving-tiny``, ``retriever/`` and
    ``item_serendipity.parquet`` into ``workdir``; returns it. Deterministic under the seed."""
    import torch

    from serendip.mllm.inference import ClusterPredictor
    from serendip.mllm.tiny import build_tiny_vlm, tokenizer_corpus
    from serendip.retriever import RetrieverConfig, train_retriever

    cfg = cfg or FixtureConfig()
    wd = Path(workdir)
    items, clusters, item_clusters = write_truth_workdir(wd, cfg)
    cur_cfg = CurationConfig(level=cfg.level, delta=1,
                             prompt=PromptConfig(strategy=cfg.strategy, n_frames=cfg.n_frames))
    write_curation(wd, CurationManifest(cur_cfg))
    # the transition prior curation writes and a fine-tuned model carries (weight 1, default)
    from serendip.curation.stage import training_prior
    from serendip.transitions import write_prior

    interactions = read_table(wd, "interactions")
    prior = training_prior(interactions, clusters, item_clusters, cur_cfg)
    write_prior(wd, prior)

    torch.manual_seed(cfg.seed)
    cand = [r for r in clusters.to_pylist() if r["level"] == cfg.level]
    texts = tokenizer_corpus(items.column("title").to_pylist(), [c["description"] for c in cand])
    model, processor = build_tiny_vlm(texts)
    predictor = ClusterPredictor(model, processor, [c["cluster_id"] for c in cand],
                                 [c["description"] for c in cand],
                                 PromptConfig(strategy=cfg.strategy, n_frames=cfg.n_frames),
                                 cfg.level, image_size=64, batch_size=32, prior=prior,
                                 prior_weight=1.0)
    mllm_dir = predictor.save(wd / "mllm" / "serving-tiny")

    train_retriever(interactions, item_clusters,
                    RetrieverConfig(epochs=cfg.retriever_epochs, dim=32, torchscript=False,
                                    seed=cfg.seed), wd / "retriever", progress=False)

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
