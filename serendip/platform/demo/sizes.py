"""The demo's presets: how large the synthetic platform is and how long each stage trains
(``--size small`` for the end-to-end test, ``default`` for ``make demo``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from serendip.errors import ConfigError


@dataclass
class DemoSize:
    items: int
    users: int
    interactions: int
    branching: tuple[int, int, int, int]
    finetune_steps: int
    retriever_epochs: int
    n_contexts: int
    seeds: tuple[int, ...]
    ablation: bool
    ablation_steps: int
    finetune_batch: int = 32
    ablation_batch: int = 16
    coverage: float = 0.8
    # Zipf traffic makes the latent topics themselves unbalanced; traffic_power=0.5 keeps the
    # tree close to the taxonomy (ARI ~0.9 at levels 3-4) while still weighting by traffic.
    # delta=2: a level-3 cluster has only b3-1 siblings under its level-2 parent (3 here), so a
    # random sibling already scores 1/3 and 3x it exceeds the log-label ceiling (~0.55); sharing
    # the level-1 cluster gives 11 candidates, closer to the paper's wide trees.
    # Ablation runs as long as the main fine-tune (400 steps): the visual cue emerges between
    # steps 200 and 300 (the champion's curve), so shorter runs compare text, which learns at
    # once, against video variants that have not started to learn yet.
    pipeline: dict = field(default_factory=dict)
    # --data: the tree follows the catalogue size (auto: 1,682 items -> 4/4/2/2); delta=2 so a
    # level-3 cluster has every level-3 cluster under its level-1 parent as a candidate; the
    # prompt follows the media present (no prompt setting: text-only tables get the text
    # prompt; the curate component leaves the prompt unset unless a prompt field is given).
    data_branching: str = "auto"
    data_pipeline: dict = field(default_factory=lambda: {"delta": 2})


SIZES = {
    # small: the end-to-end test — every stage for real, sized for minutes on 2 cores
    "small": DemoSize(items=600, users=200, interactions=8000, branching=(2, 2, 3, 2),
                      finetune_steps=120, finetune_batch=8, retriever_epochs=2, n_contexts=100,
                      seeds=(0, 1), ablation=False, ablation_steps=0,
                      pipeline={"cluster_settings": {"traffic_power": 0.5}, "delta": 2}),
    "default": DemoSize(items=2000, users=600, interactions=30000, branching=(4, 3, 4, 2),
                        finetune_steps=400, retriever_epochs=6, n_contexts=300,
                        seeds=(0, 1, 2, 3, 4), ablation=True, ablation_steps=400,
                        ablation_batch=32,
                        pipeline={"cluster_settings": {"traffic_power": 0.5}, "delta": 2}),
}


def size_preset(name: str) -> DemoSize:
    """The preset called ``name`` (a key of :data:`SIZES`).

    Raises:
        ConfigError: an unknown size.
    """
    if name not in SIZES:
        raise ConfigError(f"unknown demo size {name!r}", field="--size",
                          fix=f"use one of {', '.join(SIZES)}")
    return SIZES[name]
