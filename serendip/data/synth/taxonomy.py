"""The hidden 4-level topic taxonomy with regular branching, and every leaf's *bridge* (a
sibling level-3 topic under the same level-2 ancestor)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from serendip.data.synth.config import SynthConfig
from serendip.data.taxonomy_names import L1, L2, L3, L4


@dataclass
class Taxonomy:
    """Latent topic tree with regular branching; leaf index = mixed-radix (a, b, c, d)."""

    branching: tuple[int, int, int, int]
    bridge_l3: np.ndarray   # per leaf: index (0..b3-1) of its bridge level-3 sibling

    @property
    def n_leaves(self) -> int:
        return int(np.prod(self.branching))

    def digits(self, leaf: np.ndarray) -> tuple[np.ndarray, ...]:
        b1, b2, b3, b4 = self.branching
        d = leaf % b4
        c = (leaf // b4) % b3
        b = (leaf // (b4 * b3)) % b2
        a = leaf // (b4 * b3 * b2)
        return a, b, c, d

    def leaf(self, a, b, c, d) -> np.ndarray:
        b1, b2, b3, b4 = self.branching
        return ((a * b2 + b) * b3 + c) * b4 + d

    def node_id(self, level: int, leaf: np.ndarray) -> np.ndarray:
        """Integer id of the level-``level`` ancestor, unique within the level."""
        b1, b2, b3, b4 = self.branching
        div = {1: b2 * b3 * b4, 2: b3 * b4, 3: b4, 4: 1}[level]
        return leaf // div

    def names(self, leaf: int) -> tuple[str, str, str, str]:
        a, b, c, d = (int(x) for x in self.digits(np.asarray(leaf)))
        l1 = L1[a]
        return l1, L2[l1][b], L3[c], L4[d]

    def visual(self, leaf: int) -> tuple[int, int, int, int]:
        """(shape, hue, texture, layout) of a leaf: each level drawn by one visual attribute."""
        b1, b2, b3, b4 = self.branching
        a, b, c, d = (int(x) for x in self.digits(np.asarray(leaf)))
        hue = int(round(360 * (a * b2 + b) / (b1 * b2)))
        return a, hue, c, d


def build_taxonomy(cfg: SynthConfig, rng: np.random.Generator) -> Taxonomy:
    b1, b2, b3, b4 = cfg.branching
    n = b1 * b2 * b3 * b4
    leaves = np.arange(n)
    c = (leaves // b4) % b3
    # Bridge: another level-3 child of the same level-2 parent (never the leaf's own).
    bridge = (c + rng.integers(1, b3, size=n)) % b3
    return Taxonomy(tuple(cfg.branching), bridge)
