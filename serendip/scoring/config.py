"""Batch scoring's settings (paper §3.2: coverage of impressions, clusters per item, δ)."""

from __future__ import annotations

from dataclasses import dataclass

from serendip.errors import ConfigError


@dataclass
class ScoringConfig:
    coverage: float = 0.8           # share of impressions the scored items must cover
    k: int = 3                      # clusters per item, best first
    batch_size: int = 64            # items per constrained-decoding batch
    chunk_size: int = 256           # items per committed chunk (the unit a crash can lose)
    constrained: bool = True
    assign_new: bool = True         # place items missing from item_clusters in the tree
    progress: bool = True
    shard: int = 0                  # this worker's shard of the selected corpus ...
    num_shards: int = 1             # ... out of this many (KFP ParallelFor fans out over them)
    max_error_rate: float = 0.01    # fail the run above this share of failed items, in [0, 1]
    delta: int | None = None        # candidates' δ (None: curation.json's, else 1)

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
