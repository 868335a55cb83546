"""The curation settings (l, δ, top-k, the held-out split, the prompt) and the result of one
curation run (paper §2, §4.1)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from serendip.errors import ConfigError
from serendip.prompts import PromptConfig
from serendip.transitions import TransitionPrior

LEVELS = 4


@dataclass
class CurationConfig:
    """Which pairs count as serendipitous and how many examples each cluster gets."""

    level: int = field(default=3, metadata={
        "help": "l: the tree level at which context and next item must differ; 1..4"})
    delta: int = field(default=1, metadata={
        "help": "δ: context and next item must share the cluster at level l - δ "
                "(l - δ = 0: the root); 1..level"})
    top_k: int = field(default=10, metadata={
        "help": "context items kept per next-item cluster, by mean satisfaction; >= 1 "
                "(paper: 10)"})
    min_interactions: int = field(default=1, metadata={
        "help": "logged pairs a (context item, cluster) needs to be kept; >= 1"})
    test_fraction: float = field(default=0.2, metadata={
        "help": "held-out share of context items; in [0, 1)"})
    seed: int = field(default=0, metadata={"help": "seed of the held-out split"})
    drop_unknown_items: bool = field(default=False, metadata={
        "help": "drop interactions whose items are not in the tree (false: refuse them)"})
    prompt: PromptConfig | None = field(default=None, metadata={
        "help": "the prompt the examples are built with; null: adapt to the media the "
                "context items have (chain of thought on frames, else on the thumbnail, else "
                "the text prompt; the stats say which and why). A prompt set explicitly is "
                "kept: items lacking its media are refused"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if not 1 <= self.level <= LEVELS:
            raise ConfigError(f"level={self.level}", field="level", fix=f"use 1..{LEVELS}")
        if not 1 <= self.delta <= self.level:
            raise ConfigError(f"delta={self.delta} with level={self.level}", field="delta",
                              fix=f"use 1 <= delta <= level (here <= {self.level})")
        if self.top_k < 1:
            raise ConfigError(f"top_k={self.top_k}", field="top_k", fix="use top_k >= 1")
        if self.min_interactions < 1:
            raise ConfigError(f"min_interactions={self.min_interactions}",
                              field="min_interactions", fix="use min_interactions >= 1")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction={self.test_fraction}", field="test_fraction",
                              fix="use a fraction in [0, 1)")
        if self.prompt is not None:
            self.prompt.check()


@dataclass
class CurationResult:
    selected: pa.Table              # SELECTED_SCHEMA
    examples: pa.Table              # schema "examples"
    stats: dict
    candidate_cluster_ids: list[str]
    candidates: list[str]           # descriptions of all level-l clusters (controlled generation)
    prompt: PromptConfig | None = None   # the prompt the examples were built with
    prior: TransitionPrior | None = None  # flows of the training contexts (logit adjustment)

