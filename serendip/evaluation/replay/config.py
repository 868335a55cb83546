"""Settings of a replay (:mod:`serendip.evaluation.replay`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from serendip.blend import BlendConfig
from serendip.errors import ConfigError


@dataclass
class ReplayConfig:
    """Settings of a replay (see :mod:`serendip.evaluation.replay`); validated on construction."""

    holdout_days: float | None = field(default=None, metadata={
        "help": "held-out period, in days before the last interaction; > 0 (null: each "
                "user's last transition)"})
    k: int = field(default=10, metadata={"help": "list length of HR@k and NDCG@k; >= 1"})
    level: int = field(default=3, metadata={
        "help": "l of the serendipitous definition (differ at level l); 1..4"})
    delta: int = field(default=1, metadata={
        "help": "δ of the serendipitous definition (share level l - δ); 1..level"})
    serendipitous_share: float = field(default=0.2, metadata={
        "help": "blended slate: ceil(share · k) items from the serendipitous cluster; in [0, 1]"})
    seed: int = field(default=0, metadata={"help": "seed of bandit draws and bootstrap resamples"})
    n_bootstrap: int = field(default=500, metadata={
        "help": "bootstrap resamples for the 95% intervals; >= 1"})
    mllm_k: int = field(default=10, metadata={
        "help": "MLLM answers asked per context (the first candidate cluster wins); >= 1"})

    def __post_init__(self) -> None:
        from serendip.candidates import check_level_delta

        if self.holdout_days is not None and not (
                isinstance(self.holdout_days, (int, float)) and self.holdout_days > 0
                and math.isfinite(self.holdout_days)):
            raise ConfigError(f"holdout_days={self.holdout_days!r}", field="holdout_days",
                              fix="use a positive number of days, or leave it unset for each "
                                  "user's last transition")
        for name in ("k", "n_bootstrap", "mllm_k"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r}", field=name,
                                  fix=f"use an integer {name} >= 1")
        check_level_delta(self.level, self.delta)
        BlendConfig(self.k, self.serendipitous_share)
