"""The cluster tree's settings (paper §2: 4 levels, traffic-balanced siblings) and the branching
syntax (``auto`` or ``8/8/8/8``)."""

from __future__ import annotations

from dataclasses import dataclass

from serendip.errors import ConfigError

LEVELS = 4


@dataclass
class ClusterConfig:
    """How the tree is shaped and balanced; defaults follow the paper (4 levels).

    ``branching="auto"`` (the default) follows the catalogue size: see :func:`auto_branching`;
    the built tree's config holds the branching chosen and ``stats["branching"]`` says why.
    """

    branching: tuple[int, ...] | str = "auto"
    auto_leaf_items: int = 25       # auto branching: about this many items per leaf
    seed: int = 0
    kmeans_iters: int = 20
    kmeans_redo: int = 3            # faiss restarts per node; the best objective wins
    threads: int = 1                # faiss OpenMP threads while building (nodes are small:
                                    # more threads mostly spin on a shared machine)
    kmeans_max_points_per_centroid: int = 256   # faiss subsamples larger nodes for speed
    traffic_power: float = 1.0      # balance impressions**p: 1 = traffic, 0 = item counts
    balance_tol: float = 1.2        # target max/min traffic among siblings
    balance_rounds: int = 2         # assign → recompute centroids → assign
    assignment: str = "greedy"      # greedy: nearest centroid + cheapest-move repair;
                                    # sinkhorn: entropic OT with equal traffic shares + repair
    sinkhorn_iters: int = 200
    sinkhorn_eps: float = 0.05      # entropic regularisation, relative to the mean cost
    min_leaf_items: int = 1         # every leaf keeps at least this many items
    description_words: int = 2      # own terms a clash may use before the parent's words
    description_parent_level: int = 3   # from this level on, descriptions start with the
                                        # parent's ("football" → "football tricks")
    description_min_lift: float = 1.5   # a term must be this over-represented vs its parent
    description_min_share: float = 0.1  # a description word occurs in >= this share of the
                                        # cluster's members (titles or labels)
    extra_stopwords: tuple[str, ...] = ()

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

