"""The small synthetic platform with a cluster tree (TF-IDF embeddings), shared by the tests
of candidates, curation targets and baselines."""

from __future__ import annotations


def synth_tree(synth_dir):
    """(items, interactions, clusters, item_clusters) of the session's synthetic platform."""
    from serendip.data.io import read_table
    from serendip.embeddings import EmbeddingConfig, item_embeddings
    from serendip.tree import ClusterConfig, build_cluster_tree
    from tests.conftest import SMALL

    items = read_table(synth_dir, "items")
    inter = read_table(synth_dir, "interactions", refs={"items": items})
    emb = item_embeddings(items, EmbeddingConfig(text_encoder="tfidf"))
    tree = build_cluster_tree(items, emb, ClusterConfig(branching=SMALL["branching"]))
    return items, inter, tree.clusters, tree.item_clusters
