"""The small synthetic platform with a cluster tree (TF-IDF embeddings), shared by the tests
of candidates, curation targets and baselines."""

from __future__ import annotations

import functools


@functools.cache
def _built(path: str):
    from serendip.data.io import read_table
    from serendip.embeddings import EmbeddingConfig, item_embeddings
    from serendip.tree import ClusterConfig, build_cluster_tree
    from tests.conftest import SMALL

    items = read_table(path, "items")
    inter = read_table(path, "interactions", refs={"items": items})
    emb = item_embeddings(items, EmbeddingConfig(text_encoder="tfidf"))
    tree = build_cluster_tree(items, emb, ClusterConfig(branching=SMALL["branching"]))
    return items, inter, tree.clusters, tree.item_clusters


def synth_tree(synth_dir):
    """(items, interactions, clusters, item_clusters) of the session's synthetic platform,
    built once per session (the tables are immutable) for every module that asks."""
    return _built(str(synth_dir))

