"""The cluster tree's settings (paper §2: 4 levels, traffic-balanced siblings) and the branching
syntax (``auto`` or ``8/8/8/8``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from serendip.embeddings import EmbeddingConfig
from serendip.errors import ConfigError

LEVELS = 4


@dataclass
class ClusterConfig:
    """How the tree is shaped and balanced; defaults follow the paper (4 levels).

    ``branching="auto"`` (the default) follows the catalogue size: see :func:`auto_branching`;
    the built tree's config holds the branching chosen and ``stats["branching"]`` says why.
    """

    branching: tuple[int, ...] | str = field(default="auto", metadata={
        "help": "children per level, 4 integers >= 2 (e.g. 8/8/8/8 or [4, 3, 4, 2]), or auto "
                "(from the catalogue size, about auto_leaf_items items per leaf)"})
    auto_leaf_items: int = field(default=25, metadata={
        "help": "auto branching: about this many items per leaf; >= 1"})
    seed: int = field(default=0, metadata={"help": "seed of k-means initialisation"})
    kmeans_iters: int = field(default=20, metadata={
        "help": "k-means iterations per node; >= 1"})
    kmeans_redo: int = field(default=3, metadata={
        "help": "k-means restarts per node (the best objective wins); >= 1"})
    kmeans_max_points_per_centroid: int = field(default=256, metadata={
        "help": "faiss subsamples a node to this many points per centroid; >= 1"})
    traffic_power: float = field(default=1.0, metadata={
        "help": "siblings are balanced on impressions^p: 1 = traffic, 0 = item counts; >= 0"})
    balance_tol: float = field(default=1.2, metadata={
        "help": "target max/min traffic ratio among siblings; >= 1"})
    balance_rounds: int = field(default=2, metadata={
        "help": "assign → recompute centroids → assign rounds; >= 0"})
    assignment: str = field(default="greedy", metadata={
        "help": "greedy (nearest centroid + cheapest-move repair) | sinkhorn (entropic OT "
                "with equal traffic shares + repair)"})
    sinkhorn_iters: int = field(default=200, metadata={
        "help": "Sinkhorn iterations (assignment sinkhorn); >= 1"})
    sinkhorn_eps: float = field(default=0.05, metadata={
        "help": "Sinkhorn entropic regularisation, relative to the mean cost; > 0"})
    min_leaf_items: int = field(default=1, metadata={
        "help": "items every leaf keeps at least; >= 1"})
    description_words: int = field(default=2, metadata={
        "help": "own terms a cluster description may use before the parent's words; >= 1"})
    description_parent_level: int = field(default=3, metadata={
        "help": "from this level on, descriptions start with the parent's ('football' → "
                "'football tricks'); 1..5 (5: never)"})
    description_min_lift: float = field(default=1.5, metadata={
        "help": "a description term must be this over-represented vs its parent (ratio of "
                "shares); > 0"})
    description_min_share: float = field(default=0.1, metadata={
        "help": "a description word occurs in at least this share of the cluster's members "
                "(titles or labels); in [0, 1]"})
    extra_stopwords: tuple[str, ...] = field(default=(), metadata={
        "help": "words never used in descriptions, besides the English stop words"})
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig, metadata={
        "help": "which features make an item's clustering embedding, and their weights"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if isinstance(self.branching, str):
            self.branching = parse_branching(self.branching)
        if self.branching != "auto":
            b = tuple(self.branching)
            if len(b) != LEVELS or any(int(x) < 2 for x in b):
                raise ConfigError(f"branching {list(b)} must have {LEVELS} levels, each >= 2",
                                  field="branching",
                                  fix="use e.g. --branching auto, 8/8/8/8 or 4/3/4/2")
        if self.auto_leaf_items < 1:
            raise ConfigError(f"auto_leaf_items={self.auto_leaf_items}", field="auto_leaf_items",
                              fix="use auto_leaf_items >= 1, e.g. 25")
        if not 0.0 <= self.description_min_share <= 1.0:
            raise ConfigError(f"description_min_share={self.description_min_share}",
                              field="description_min_share", fix="use a share in [0, 1], e.g. 0.1")
        if self.balance_tol < 1.0:
            raise ConfigError(f"balance_tol={self.balance_tol} < 1", field="balance_tol",
                              fix="use a max/min ratio >= 1, e.g. 1.2")
        if self.traffic_power < 0:
            raise ConfigError(f"traffic_power={self.traffic_power}", field="traffic_power",
                              fix="use 0 (equal item counts) to 1 (equal traffic)")
        if self.assignment not in ("greedy", "sinkhorn"):
            raise ConfigError(f"unknown assignment {self.assignment!r}", field="assignment",
                              fix="use greedy or sinkhorn")
        if self.min_leaf_items < 1:
            raise ConfigError(f"min_leaf_items={self.min_leaf_items}", field="min_leaf_items",
                              fix="use min_leaf_items >= 1")
        if self.description_words < 1:
            raise ConfigError(f"description_words={self.description_words}",
                              field="description_words", fix="use description_words >= 1")
        for name in ("kmeans_iters", "kmeans_redo", "kmeans_max_points_per_centroid",
                     "sinkhorn_iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}", field=name, fix="use >= 1")
        if self.balance_rounds < 0:
            raise ConfigError(f"balance_rounds={self.balance_rounds}", field="balance_rounds",
                              fix="use >= 0")
        if not self.sinkhorn_eps > 0:
            raise ConfigError(f"sinkhorn_eps={self.sinkhorn_eps}", field="sinkhorn_eps",
                              fix="use a positive regularisation, e.g. 0.05")
        if not 1 <= self.description_parent_level <= LEVELS + 1:
            raise ConfigError(f"description_parent_level={self.description_parent_level}",
                              field="description_parent_level",
                              fix=f"use 1..{LEVELS + 1} ({LEVELS + 1}: never)")
        if not self.description_min_lift > 0:
            raise ConfigError(f"description_min_lift={self.description_min_lift}",
                              field="description_min_lift", fix="use a ratio > 0, e.g. 1.5")


def parse_branching(text: str | tuple | list) -> tuple[int, ...] | str:
    """``"4/3/4/2"`` (or a list) → ``(4, 3, 4, 2)``; ``"auto"`` stays ``"auto"`` (chosen from
    the catalogue size at build time, :func:`auto_branching`).

    Raises:
        ConfigError: anything that is not ``auto`` or 4 integers >= 2.
    """
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = str(text).replace(",", "/").split("/")
    try:
        out = tuple(int(x) for x in parts)
    except (TypeError, ValueError):
        out = ()
    if len(out) != LEVELS or any(x < 2 for x in out):
        raise ConfigError(f"branching {text!r} is not {LEVELS} integers >= 2", field="branching",
                          fix="write it like auto, 8/8/8/8 or 4/3/4/2")
    return out

