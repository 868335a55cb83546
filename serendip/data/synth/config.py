"""The synthetic platform's settings: the satisfaction model (how much a next item satisfies by
its relation to the user's interests), the logged policy (how production picks the next item)
and :class:`SynthConfig`; validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from serendip.data.taxonomy_names import L1, L2, L3, L4
from serendip.errors import ConfigError

EPOCH_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


@dataclass
class SatisfactionModel:
    """Mean satisfaction of a next item by its relation to the user's interests."""

    familiar: float = field(default=0.45, metadata={
        "help": "mean satisfaction of an item in the same leaf as an interest (relevant but "
                "stale); in [0, 1]"})
    bridge_affinity: float = field(default=0.90, metadata={
        "help": "... of the interest's bridge topic when the user has the hidden affinity; "
                "in [0, 1]"})
    sibling_leaf: float = field(default=0.40, metadata={
        "help": "... of an item in the same level-3 topic as an interest; in [0, 1]"})
    same_l2: float = field(default=0.30, metadata={
        "help": "... of an item in the same level-2 topic, not a liked bridge; in [0, 1]"})
    same_l1: float = field(default=0.22, metadata={
        "help": "... of an item in the same level-1 topic; in [0, 1]"})
    unrelated: float = field(default=0.12, metadata={
        "help": "... of an unrelated item; in [0, 1]"})
    noise: float = field(default=0.15, metadata={
        "help": "standard deviation of the Gaussian noise added (result clipped into [0, 1]); "
                ">= 0"})

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not 0 <= value <= 1:
                raise ConfigError(f"{name}={value}", field=f"satisfaction.{name}",
                                  fix="use a value in [0, 1]")


@dataclass
class PolicyModel:
    """How the logged (production) recommender picks the next item from the context item."""

    same_leaf: float = field(default=0.50, metadata={
        "help": "probability the next item is from the context item's leaf; in [0, 1]"})
    sibling_leaf: float = field(default=0.15, metadata={
        "help": "probability it is from a sibling leaf (same level-3 topic); in [0, 1]"})
    same_l2: float = field(default=0.17, metadata={
        "help": "probability of a serendipitous jump at (l=3, δ=1): another level-3 topic of "
                "the same level-2 topic; in [0, 1]"})
    same_l1: float = field(default=0.08, metadata={
        "help": "probability it is from the same level-1 topic; in [0, 1]"})
    back_to_interest: float = field(default=0.10, metadata={
        "help": "probability the user returns to one of their interests; in [0, 1] (the "
                "rest, up to 1 in all: a random item)"})

    def __post_init__(self) -> None:
        values = asdict(self)
        for name, value in values.items():
            if not 0 <= value <= 1:
                raise ConfigError(f"{name}={value}", field=f"policy.{name}",
                                  fix="use a probability in [0, 1]")
        if sum(values.values()) > 1 + 1e-9:
            raise ConfigError(f"probabilities sum to {sum(values.values()):.3f}",
                              field="policy", fix="make them sum to at most 1")


@dataclass
class SynthConfig:
    """The synthetic short-video platform (items with a hidden 4-level taxonomy, users with
    hidden bridge affinities, logged interactions); validated on construction."""

    items: int = field(default=2000, metadata={
        "help": "items in the catalogue; >= the number of leaf topics (product of branching)"})
    users: int = field(default=500, metadata={"help": "users; >= 1"})
    interactions: int = field(default=20000, metadata={
        "help": "logged (context, next item) interactions; >= users"})
    seed: int = field(default=0, metadata={"help": "seed of every random draw"})
    branching: tuple[int, int, int, int] = field(default=(4, 3, 4, 2), metadata={
        "help": "children per level of the hidden taxonomy, [l1, l2, l3, l4]; at most "
                "[8, 6, 6, 4] (the name lists), l3 >= 2 so every leaf has a bridge"})
    zipf_s: float = field(default=1.05, metadata={
        "help": "Zipf exponent of item popularity (impressions ∝ rank^-s); > 0"})
    mean_session: float = field(default=6.0, metadata={
        "help": "mean session length, in interactions (geometric, clipped to 1..30); >= 1"})
    affinity_prob: float = field(default=0.8, metadata={
        "help": "chance a user has the hidden affinity for an interest's bridge topic; in "
                "[0, 1]"})
    title_p: tuple[float, float, float, float] = field(
        default=(0.25, 0.45, 0.30, 0.25), metadata={
            "help": "probability a title has a word of taxonomy level 1..4, [p1, p2, p3, p4]; "
                    "each in [0, 1]"})
    title_p_misleading: float = field(default=0.15, metadata={
        "help": "probability a title has a misleading word of another topic; in [0, 1]"})
    days: int = field(default=30, metadata={
        "help": "time span of the logs, in days from 2026-01-01; >= 1"})
    satisfaction: SatisfactionModel = field(default_factory=SatisfactionModel, metadata={
        "help": "mean satisfaction by relation to the user's interests"})
    policy: PolicyModel = field(default_factory=PolicyModel, metadata={
        "help": "how the logged recommender picks the next item"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        b1, b2, b3, b4 = self.branching
        if not (1 <= b1 <= len(L1) and 1 <= b2 <= min(len(v) for v in L2.values())
                and 2 <= b3 <= len(L3) and 1 <= b4 <= len(L4)):
            raise ConfigError(f"branching {self.branching} is out of range", field="branching",
                              fix=f"use at most {len(L1)}/6/{len(L3)}/{len(L4)}, with >= 2 "
                                  "at level 3 so that every leaf has a bridge")
        n_leaves = b1 * b2 * b3 * b4
        if self.items < n_leaves:
            raise ConfigError(f"{self.items} items cannot cover {n_leaves} topics",
                              field="items", fix=f"use --items >= {n_leaves}")
        if self.users < 1:
            raise ConfigError("need at least one user", field="users", fix="use --users >= 1")
        if self.interactions < self.users:
            raise ConfigError(f"{self.interactions} interactions for {self.users} users",
                              field="interactions", fix="use --interactions >= --users")
        if not self.zipf_s > 0:
            raise ConfigError(f"zipf_s={self.zipf_s}", field="zipf_s", fix="use > 0, e.g. 1.05")
        if not self.mean_session >= 1:
            raise ConfigError(f"mean_session={self.mean_session}", field="mean_session",
                              fix="use >= 1 interactions")
        if self.days < 1:
            raise ConfigError(f"days={self.days}", field="days", fix="use >= 1")
        for name, values in (("affinity_prob", [self.affinity_prob]),
                             ("title_p", list(self.title_p)),
                             ("title_p_misleading", [self.title_p_misleading])):
            if not all(0 <= v <= 1 for v in values):
                raise ConfigError(f"{name}={values if len(values) > 1 else values[0]}",
                                  field=name, fix="use probabilities in [0, 1]")
