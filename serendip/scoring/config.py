"""Batch scoring's settings (paper §3.2: coverage of impressions, clusters per item, δ)."""

from __future__ import annotations

from dataclasses import dataclass, field

from serendip.errors import ConfigError


@dataclass
class ScoringConfig:
    """Which items are scored offline and how (paper §3.2); validated on construction."""

    coverage: float = field(default=0.8, metadata={
        "help": "share of impressions the scored (most popular) items must cover; in (0, 1]"})
    k: int = field(default=3, metadata={"help": "serendipitous clusters per item, best first; >= 1"})
    batch_size: int = field(default=64, metadata={
        "help": "items per constrained-decoding batch; >= 1"})
    chunk_size: int = field(default=256, metadata={
        "help": "items per committed chunk (the most a crash can lose); >= 1"})
    constrained: bool = field(default=True, metadata={
        "help": "decode with the trie of cluster descriptions (only valid clusters)"})
    assign_new: bool = field(default=True, metadata={
        "help": "place items missing from item_clusters in the tree before scoring"})
    shard: int = field(default=0, metadata={
        "help": "this worker's shard of the selected corpus; 0..num_shards-1"})
    num_shards: int = field(default=1, metadata={
        "help": "shards the corpus is split into (KFP ParallelFor fans out over them); >= 1"})
    max_error_rate: float = field(default=0.01, metadata={
        "help": "the run fails above this share of failed items; in [0, 1]"})
    delta: int | None = field(default=None, metadata={
        "help": "δ of the candidate clusters; >= 1 (null: curation.json's, else 1)"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if not (isinstance(self.coverage, (int, float)) and 0 < self.coverage <= 1):
            raise ConfigError(f"coverage must be in (0, 1], got {self.coverage!r}",
                              field="coverage", fix="use e.g. --coverage 0.8 (80% of impressions)")
        for name in ("k", "batch_size", "chunk_size", "num_shards"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", field=name,
                                  fix=f"set {name} to a positive integer")
        if not 0 <= self.shard < self.num_shards:
            raise ConfigError(f"shard {self.shard} of {self.num_shards}", field="shard",
                              fix="use 0 <= shard < num_shards")
        if isinstance(self.max_error_rate, bool) or not (
                isinstance(self.max_error_rate, (int, float)) and 0 <= self.max_error_rate <= 1):
            raise ConfigError(f"must be in [0, 1], got {self.max_error_rate!r}",
                              field="max_error_rate",
                              fix="use e.g. --max-error-rate 0.01 (1% of the selected items)")
        if self.delta is not None and (isinstance(self.delta, bool)
                                       or not isinstance(self.delta, int) or self.delta < 1):
            raise ConfigError(f"must be an integer >= 1, got {self.delta!r}", field="delta",
                              fix="use the δ the model was curated with (curation.json)")
