"""``cluster`` component: items → traffic-balanced 4-level cluster tree (serendip.tree)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from serendip.platform.kfp.components import COMPONENT_KW


@dsl.component(**COMPONENT_KW)
def cluster(data: Input[Dataset], tree: Output[Dataset], metrics: Output[Metrics],
            branching: str = "auto", settings: dict = None) -> str:
    """Embed the items of ``data`` (a directory with items.parquet) and build the tree.

    ``tree`` becomes a directory with embeddings.parquet, cluster_tree/, clusters.parquet and
    item_clusters.parquet; ``settings`` holds ClusterConfig fields (``embedding.<field>`` or an
    ``embedding`` mapping for its EmbeddingConfig; :func:`serendip.config.load_config`).
    ``branching="auto"`` follows the catalogue size; the branching used is recorded in the
    tree's metadata. Returns the tree's balance statistics as JSON.
    """
    import json

    from serendip.config import load_config
    from serendip.tree import ClusterConfig, cluster_stage

    cfg = load_config(ClusterConfig, settings={**(settings or {}), "branching": branching})
    result = cluster_stage(data.path, tree.path, cfg)
    used = "/".join(str(b) for b in result.config.branching)
    tree.metadata.update({"branching": used, "branching_requested": branching,
                          "clusters": sum(len(i) for i in result.ids)})
    for level, stats in result.stats.items():
        if level.startswith("level"):
            metrics.log_metric(f"{level}_sibling_traffic_ratio_worst",
                               stats["sibling_max_min_traffic_worst"])
            metrics.log_metric(f"{level}_sibling_traffic_ratio_median",
                               stats["sibling_max_min_traffic_median"])
    return json.dumps({k: v for k, v in result.stats.items() if k.startswith("level")})
