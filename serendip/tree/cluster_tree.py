"""The fitted tree object: per level, path-style cluster ids, centroids and descriptions; saved as
``tree.json`` + ``centroids.safetensors`` (no pickle)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from serendip.data.schemas import SCHEMAS
from serendip.errors import SerendipError
from serendip.tree.config import LEVELS, ClusterConfig

TREE_JSON = "tree.json"
TREE_DIR = "cluster_tree"
EMBEDDER_SUBDIR = "embedder"
CENTROIDS_FILE = "centroids.safetensors"


@dataclass
class ClusterTree:
    """A fitted tree: per level, node ids, parents, centroids and descriptions."""

    config: ClusterConfig
    ids: list[list[str]]                     # per level: cluster ids
    centroids: list[np.ndarray]              # per level: (n_nodes × d) float32
    descriptions: dict[str, str]
    sizes: dict[str, int] = field(default_factory=dict)
    traffic: dict[str, int] = field(default_factory=dict)
    item_clusters: pa.Table | None = None    # assignment of the items the tree was built on
    stats: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.centroids[0].shape[1])

    @property
    def clusters(self) -> pa.Table:
        rows = {"cluster_id": [], "level": [], "parent_id": [], "description": [], "size": [],
                "traffic": []}
        for lvl, ids in enumerate(self.ids, start=1):
            for cid in ids:
                rows["cluster_id"].append(cid)
                rows["level"].append(lvl)
                rows["parent_id"].append(cid.rsplit(".", 1)[0] if lvl > 1 else None)
                rows["description"].append(self.descriptions[cid])
                rows["size"].append(int(self.sizes.get(cid, 0)))
                rows["traffic"].append(int(self.traffic.get(cid, 0)))
        return pa.table(rows, schema=SCHEMAS["clusters"])

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``tree.json`` + ``centroids.safetensors`` atomically into ``out_dir``."""
        from safetensors.numpy import save

        from serendip.data.io import atomic_write_bytes

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"level{lvl}": np.ascontiguousarray(c, np.float32)
                   for lvl, c in enumerate(self.centroids, start=1)}
        atomic_write_bytes(out / CENTROIDS_FILE, save(tensors))
        meta = {"format": 1, "config": _config_dict(self.config), "ids": self.ids,
                "descriptions": self.descriptions, "sizes": self.sizes, "traffic": self.traffic,
                "stats": self.stats}
        atomic_write_bytes(out / TREE_JSON, json.dumps(meta, indent=1).encode())
        return out

    @classmethod
    def load(cls, tree_dir: str | os.PathLike) -> ClusterTree:
        from safetensors.numpy import load_file

        from serendip.config import load_config

        d = Path(tree_dir)
        if not (d / TREE_JSON).exists() or not (d / CENTROIDS_FILE).exists():
            raise SerendipError(f"no saved cluster tree in {d}", field="cluster_tree",
                                fix="run `serendip cluster` first or pass the right directory")
        meta = json.loads((d / TREE_JSON).read_text())
        tensors = load_file(str(d / CENTROIDS_FILE))
        saved = dict(meta["config"])
        saved.pop("threads", None)   # trees saved before issue 13: a run-time flag since
        cfg = load_config(ClusterConfig, settings=saved)
        return cls(config=cfg, ids=meta["ids"],
                   centroids=[tensors[f"level{lvl}"] for lvl in range(1, LEVELS + 1)],
                   descriptions=meta["descriptions"], sizes=meta.get("sizes", {}),
                   traffic=meta.get("traffic", {}), stats=meta.get("stats", {}))


def _config_dict(cfg: ClusterConfig) -> dict:
    d = asdict(cfg)
    d["branching"] = list(cfg.branching)
    d["extra_stopwords"] = list(cfg.extra_stopwords)
    return d
