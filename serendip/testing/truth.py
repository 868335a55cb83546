"""The synthetic platform's ground truth as a cluster tree: its latent taxonomy *is* a perfect
4-level tree. One helper for every test, fixture and benchmark that skips the cluster stage.

* :func:`truth_clusters` — the ``clusters`` and ``item_clusters`` tables, with the path ids the
  cluster stage writes (``"1.0.2.1"``).
* :func:`topic_embedding` — a one-hot of each item's true leaf topic (a cheap embedding).
* :func:`write_truth_workdir` — a work directory holding the platform and those two tables.
* :func:`save_truth_tree` — a saved :class:`~serendip.tree.ClusterTree` (centroids: member means
  of an embedding) so new items can be placed (:func:`serendip.tree.assign_new_items` with
  ``embed``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def truth_clusters(synth_dir: str | Path) -> tuple[pa.Table, pa.Table]:
    """(clusters, item_clusters) from ``<synth_dir>/truth/`` (taxonomy, item topics), with path
    ids: a node's id is its parent's plus its rank among its siblings; ``size`` and ``traffic``
    count the items under a cluster."""
    tax = pq.read_table(Path(synth_dir) / "truth" / "taxonomy.parquet").to_pylist()
    topics = pq.read_table(Path(synth_dir) / "truth" / "item_topics.parquet").to_pylist()
    path: dict[tuple[int, int], str] = {}
    for level in (1, 2, 3, 4):
        nodes = sorted((r for r in tax if r["level"] == level), key=lambda r: r["node"])
        rank: dict = {}
        for r in nodes:
            parent = path.get((level - 1, r["parent"])) if level > 1 else None
            i = rank.setdefault(parent, 0)
            rank[parent] = i + 1
            path[(level, r["node"])] = f"{parent}.{i}" if parent else str(i)
    keys = ("l1", "l2", "l3", "leaf")
    rows = [{"item_id": t["item_id"], **{f"c{j + 1}": path[(j + 1, t[k])]
                                         for j, k in enumerate(keys)}} for t in topics]
    sizes: dict[str, int] = {}
    for r in rows:
        for j in range(1, 5):
            sizes[r[f"c{j}"]] = sizes.get(r[f"c{j}"], 0) + 1
    clusters = [{"cluster_id": path[(r["level"], r["node"])], "level": r["level"],
                 "parent_id": path[(r["level"], r["node"])].rsplit(".", 1)[0]
                 if r["level"] > 1 else None,
                 "description": r["name"], "size": sizes.get(path[(r["level"], r["node"])], 0),
                 "traffic": sizes.get(path[(r["level"], r["node"])], 0)} for r in tax]
    return pa.Table.from_pylist(clusters), pa.Table.from_pylist(rows)



def write_truth_workdir(workdir: str | Path, cfg) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Write the synthetic platform of ``cfg`` (``items``, ``users``, ``interactions``,
    ``seed``, ``branching``: a :class:`~serendip.testing.serving.FixtureConfig`) into
    ``workdir`` unless it already holds items, then its ground-truth ``clusters`` and
    ``item_clusters`` (:func:`truth_clusters`); returns (items, clusters, item_clusters)."""
    from serendip.data.io import has_table, read_table, write_table
    from serendip.data.synth import SynthConfig, write_synth

    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    if not has_table(wd, "items"):
        write_synth(SynthConfig(items=cfg.items, users=cfg.users, interactions=cfg.interactions,
                                seed=cfg.seed, branching=cfg.branching), wd)
    items = read_table(wd, "items")
    clusters, item_clusters = truth_clusters(wd)
    write_table(wd, "clusters", clusters)
    write_table(wd, "item_clusters", item_clusters, refs={"items": items})
    return items, clusters, item_clusters

def topic_embedding(workdir: str | Path, items: pa.Table) -> np.ndarray:
    """One-hot of the item's true leaf topic (truth/), the embedding the fixture's tree uses.
    Items unknown to truth/ (copies made by a test) take the topic of the id before ``~``."""
    topics = pq.read_table(Path(workdir) / "truth" / "item_topics.parquet").to_pydict()
    leaf = dict(zip(topics["item_id"], topics["leaf"]))
    n_leaves = max(leaf.values()) + 1
    ids = items.column("item_id").to_pylist()
    out = np.zeros((len(ids), n_leaves), np.float32)
    for i, item in enumerate(ids):
        out[i, leaf[item.split("~")[0]]] = 1.0
    return out


def save_truth_tree(workdir: str | Path, clusters: pa.Table, item_clusters: pa.Table,
                    emb: np.ndarray) -> Path:
    """Save a :class:`~serendip.tree.ClusterTree` of ``clusters`` whose centroids are the member
    means of ``emb`` (n × d, one row per ``item_clusters`` row) under ``<workdir>/cluster_tree``;
    returns that folder."""
    from serendip.tree import ClusterConfig, ClusterTree

    rows = clusters.to_pylist()
    by_level = [sorted((r for r in rows if r["level"] == lvl),
                       key=lambda r: tuple(int(x) for x in r["cluster_id"].split(".")))
                for lvl in (1, 2, 3, 4)]
    ids = [[r["cluster_id"] for r in lvl] for lvl in by_level]
    centroids = []
    for lvl, level_ids in enumerate(ids, start=1):
        col = np.asarray(item_clusters.column(f"c{lvl}").to_pylist(), dtype=object)
        centroids.append(np.stack([emb[col == cid].mean(axis=0) for cid in level_ids]))
    branching = tuple(max(int(c.rsplit(".", 1)[-1]) for c in level) + 1 for level in ids)
    tree = ClusterTree(config=ClusterConfig(branching=branching), ids=ids,
                       centroids=[c.astype(np.float32) for c in centroids],
                       descriptions={r["cluster_id"]: r["description"] for r in rows})
    return tree.save(Path(workdir) / "cluster_tree")
