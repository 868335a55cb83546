"""``curate`` component: serendipitous pairs → diversified selection → examples
(serendip.curation)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from serendip.platform.kfp.components import COMPONENT_KW


@dsl.component(**COMPONENT_KW)
def curate(data: Input[Dataset], tree: Input[Dataset], examples: Output[Dataset],
           metrics: Output[Metrics], level: int = 3, delta: int = 1, top_k: int = 10,
           strategy: str = "auto", n_frames: int = 0, use_thumbnail: bool = False,
           settings: dict = None) -> str:
    """Curate training examples from ``data`` (items, interactions) and ``tree`` (clusters,
    item_clusters). ``examples`` becomes a directory with examples.parquet,
    curated_pairs.parquet and curation.json. Returns the curation statistics as JSON.
    ``strategy="auto"``, ``n_frames=0`` and ``use_thumbnail=False`` leave the prompt to the
    media present (frames → thumbnail → text), as the CLI does when no prompt flag is given;
    any other value is the user's choice and is kept.
    """
    import json

    from serendip.config import load_config
    from serendip.curation import CurationConfig, curate_stage

    chosen = {key: value for key, value, unset in (
        ("prompt.strategy", strategy, "auto"), ("prompt.n_frames", n_frames, 0),
        ("prompt.use_thumbnail", use_thumbnail, False)) if value != unset}
    cfg = load_config(CurationConfig, settings={**(settings or {}), "level": level,
                                                "delta": delta, "top_k": top_k, **chosen})
    result = curate_stage(data.path, examples.path, cfg, clusters_dir=tree.path)
    used = result.prompt or cfg.prompt
    examples.metadata.update({"level": level, "delta": delta, "strategy": used.strategy,
                              "examples": result.examples.num_rows})
    pairs = result.stats["pairs"]
    for kind in ("similar", "serendipitous"):
        metrics.log_metric(f"{kind}_pairs", pairs[kind]["pairs"])
        if pairs[kind]["mean_satisfaction"] is not None:
            metrics.log_metric(f"{kind}_mean_satisfaction", pairs[kind]["mean_satisfaction"])
    metrics.log_metric("examples", result.examples.num_rows)
    return json.dumps(result.stats)
