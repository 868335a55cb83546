"""A work directory ready for ``serendip score`` in seconds, for scoring tests and benchmarks.

Scoring only needs the artifacts' shapes and a deterministic model, not a good one: clusters come
from the synthetic ground truth (:mod:`serendip.testing.truth`: path ids, and a saved
``cluster_tree/`` whose centroids are per-cluster means of a cheap topic embedding, so new items
can be placed), and the MLLM is the tiny default VLM with random weights scaled up
(×``sharpen``) so that its trie-constrained answers depend on the input instead of collapsing
onto one cluster. ``serendip demo`` builds the real thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from serendip.prompts import PromptConfig
from serendip.testing.serving import FixtureConfig
from serendip.testing.truth import save_truth_tree, topic_embedding, write_truth_workdir


@dataclass
class ScoringFixtureConfig(FixtureConfig):
    """The serving fixture's platform; one frame per item, and the MLLM's weights × sharpen."""

    n_frames: int = field(default=1, metadata={"help": "frames per item in the prompt; >= 1"})
    sharpen: float = field(default=3.0, metadata={
        "help": "the fixture MLLM's output weights are multiplied by this (sharper, more "
                "deterministic answers); > 0"})

    def __post_init__(self) -> None:
        from serendip.errors import ConfigError

        super().__post_init__()
        if not self.sharpen > 0:
            raise ConfigError(f"sharpen={self.sharpen}", field="sharpen", fix="use > 0")


def build_scoring_workdir(workdir: str | Path, cfg: ScoringFixtureConfig | None = None
                          ) -> tuple[Path, Path]:
    """Write items/interactions (synthetic), clusters, item_clusters, cluster_tree/ and a tiny
    saved MLLM into ``workdir``; returns (workdir, model_dir). Deterministic under the seed."""
    import torch

    from serendip.mllm.inference import ClusterPredictor
    from serendip.mllm.tiny import build_tiny_vlm, tokenizer_corpus

    cfg = cfg or ScoringFixtureConfig()
    wd = Path(workdir)
    items, clusters, item_clusters = write_truth_workdir(wd, cfg)
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
