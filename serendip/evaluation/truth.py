"""The synthetic platform's ground truth as an oracle: how much would this user, watching this
context item, enjoy that item? Real logs cannot answer this; the simulation can."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from serendip.config import load_config
from serendip.data.synth import SatisfactionModel, Taxonomy, expected_satisfaction, with_context
from serendip.errors import SerendipError


@dataclass
class GroundTruth:
    tax: Taxonomy
    leaf: dict[str, int]                  # item_id -> latent leaf
    interests: dict[str, np.ndarray]      # user_id -> (3,) leaves, -1 padded
    affinity: dict[str, np.ndarray]       # user_id -> (3,) bools
    satisfaction: SatisfactionModel

    @classmethod
    def load(cls, data_dir: str | Path) -> GroundTruth:
        t = Path(data_dir) / "truth"
        if not (t / "truth.json").exists():
            raise SerendipError(f"no ground truth under {t}", field="truth",
                                fix="the online simulation needs the synthetic platform's "
                                    "ground truth: run it on a new `serendip synth --out <dir>` "
                                    "directory, not on your own data")
        meta = json.loads((t / "truth.json").read_text())
        cfg = meta["config"]
        branching = tuple(cfg["branching"])
        bridges = pq.read_table(t / "bridges.parquet").to_pandas().sort_values("leaf")
        tax = Taxonomy(branching, (bridges.bridge_l3.to_numpy() % branching[2]).astype(np.int64))
        topics = pq.read_table(t / "item_topics.parquet").to_pandas()
        ui = pq.read_table(t / "user_interests.parquet").to_pandas()
        interests: dict[str, np.ndarray] = {}
        affinity: dict[str, np.ndarray] = {}
        for user, grp in ui.groupby("user_id", sort=False):
            lv = np.full(3, -1, dtype=np.int64)
            af = np.zeros(3, dtype=bool)
            lv[: len(grp)] = grp.leaf.to_numpy()[:3]
            af[: len(grp)] = grp.affinity.to_numpy()[:3]
            interests[user], affinity[user] = lv, af
        return cls(tax, dict(zip(topics.item_id, topics.leaf.astype(int))), interests, affinity,
                   load_config(SatisfactionModel, settings=cfg["satisfaction"]))

    def expected(self, user_ids: list[str], context_item_ids: list[str],
                 item_ids: list[str]) -> np.ndarray:
        """Noise-free satisfaction of each (user, context, item) triple."""
        inter = np.stack([self.interests[u] for u in user_ids])
        aff = np.stack([self.affinity[u] for u in user_ids])
        ctx = np.array([self.leaf[c] for c in context_item_ids])
        inter, aff = with_context(inter, aff, ctx)
        nxt = np.array([self.leaf[i] for i in item_ids])
        return expected_satisfaction(self.tax, nxt, inter, aff, self.satisfaction)

    def bridge_l3(self, item_id: str) -> int:
        """Latent level-3 node id of the item's bridge topic."""
        lf = np.asarray(self.leaf[item_id])
        a, b, _, _ = self.tax.digits(lf)
        return int(self.tax.node_id(3, self.tax.leaf(a, b, self.tax.bridge_l3[lf], 0)))
