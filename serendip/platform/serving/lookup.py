"""Where the recommend path finds a context item's serendipitous cluster, and its media.

* :class:`ClusterLookup` — Feast online store (``serendip.platform.features``) when the work
  directory has a materialized ``feature_repo/``; otherwise a snapshot of
  ``item_serendipity.parquet`` (said at start-up, and in every answer's SOURCE). Both return
  ``None`` for an item that has not been scored, which sends it to the MLLM.
* :class:`ItemCatalog` — title, thumbnail, frames and own-cluster description of known items,
  for the MLLM call on a miss.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from serendip.data.io import read_table, table_path
from serendip.serving_core import ClusterChoice, top_choice


class ClusterLookup:
    """item id → :class:`ClusterChoice` from Feast (default) or the scored table."""

    def __init__(self, workdir: str | os.PathLike, source: str = "auto"):
        wd = Path(workdir)
        self.kind = "none"
        self._online = None
        self._table: dict[str, ClusterChoice] = {}
        feast_ready = (wd / "feature_repo" / "feature_store.yaml").exists()
        if source == "feast" or (source == "auto" and feast_ready):
            from serendip.platform.features import OnlineFeatures

            self._online = OnlineFeatures(wd)
            self.kind = "feast"
        elif source in ("auto", "table") and table_path(wd, "item_serendipity").exists():
            t = read_table(wd, "item_serendipity")
            for item, cids, descs in zip(t.column("item_id").to_pylist(),
                                         t.column("cluster_ids").to_pylist(),
                                         t.column("descriptions").to_pylist()):
                choice = top_choice(cids, descs, "table")
                if choice is not None:
                    self._table[item] = choice
            self.kind = "table"

    def __call__(self, item_id: str) -> ClusterChoice | None:
        if self._online is not None:
            row = self._online.serendipity(item_id)
            return None if row is None else top_choice(row["cluster_ids"], row["descriptions"],
                                                       "feast")
        return self._table.get(item_id)


class ItemCatalog:
    """Known items' media for the MLLM fallback (the serving process owns the items table)."""

    def __init__(self, workdir: str | os.PathLike):
        wd = Path(workdir)
        self.items: dict[str, dict] = {}
        if not table_path(wd, "items").exists():
            return
        level = 3
        if (wd / "curation.json").exists():
            level = int(json.loads((wd / "curation.json").read_text()).get("level", 3))
        own: dict[str, str] = {}
        if table_path(wd, "item_clusters").exists() and table_path(wd, "clusters").exists():
            desc = dict(zip(*read_table(wd, "clusters").select(
                ["cluster_id", "description"]).to_pydict().values()))
            ic = read_table(wd, "item_clusters")
            own = {i: desc.get(c, "") for i, c in zip(ic.column("item_id").to_pylist(),
                                                     ic.column(f"c{level}").to_pylist())}
        t = read_table(wd, "items").select(["item_id", "title", "thumbnail", "frames"])
        for row in t.to_pylist():
            row["context_description"] = own.get(row["item_id"], "")
            row["base_dir"] = str(wd)
            self.items[row.pop("item_id")] = row

    def __call__(self, item_id: str) -> dict | None:
        return self.items.get(item_id)

    def __len__(self) -> int:
        return len(self.items)
