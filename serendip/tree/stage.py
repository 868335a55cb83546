"""The cluster stage on a work directory (CLI ``serendip cluster``, the KFP component): items →
embeddings → tree → clusters / item_clusters tables."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from serendip.tree.build import build_cluster_tree
from serendip.tree.cluster_tree import EMBEDDER_SUBDIR, TREE_DIR, ClusterTree
from serendip.tree.config import ClusterConfig


def cluster_stage(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  cfg: ClusterConfig | None = None, *, use_cache: bool = True,
                  threads: int = 1) -> ClusterTree:
    """Read ``items`` (and ``interactions`` when present: the behaviour block) from
    ``data_dir``; write embeddings.parquet, cluster_tree/, clusters.parquet and
    item_clusters.parquet to ``out_dir`` (default: ``data_dir``), embedding the items as
    ``cfg.embedding`` says. ``tree.stats`` gains
    ``embedding.blocks`` (each block's weight, dim and distance share) and, when item labels
    exist (``item_labels.parquet`` or a ``labels`` column), ``labels``: NMI/ARI per level
    against the primary label (:func:`serendip.data.labels.label_agreement`). The tree-structured
    clusters of paper §2. ``use_cache``: reuse embeddings.parquet when it matches;
    ``threads``: faiss threads (run-time flags, not settings).

    Raises:
        SchemaError: a missing or malformed table. ConfigError: as
            :func:`build_cluster_tree`.
    """
    from serendip.data.io import has_table, read_table, write_table
    from serendip.data.labels import label_agreement, read_item_labels
    from serendip.embeddings import EMBEDDINGS_FILE, embed_catalogue

    cfg = cfg or ClusterConfig()
    embedding = cfg.embedding
    out = Path(out_dir or data_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = read_table(data_dir, "items")
    interactions = (read_table(data_dir, "interactions")
                    if embedding.w_behaviour > 0 and has_table(data_dir, "interactions") else None)
    if not use_cache:
        (out / EMBEDDINGS_FILE).unlink(missing_ok=True)
    emb, embedder = embed_catalogue(items, embedding, base_dir=data_dir, cache_dir=out,
                                    interactions=interactions)
    labels = read_item_labels(data_dir)
    tree = build_cluster_tree(items, emb, cfg, labels=labels, threads=threads)   # labels may name clusters
    tree.stats["embedding"] = {"config": asdict(embedding), "encoder": embedder.encoder,
                               "dim": int(emb.shape[1]), "blocks": embedder.block_report()}
    if labels is not None:
        tree.stats["labels"] = label_agreement(tree.item_clusters, labels)
    tree.save(out / TREE_DIR)
    embedder.save(out / TREE_DIR / EMBEDDER_SUBDIR)
    write_table(out, "clusters", tree.clusters)
    write_table(out, "item_clusters", tree.item_clusters, refs={"items": items})
    return tree
