"""Sharded batch scoring: ``score_shard`` scores one stable hash-shard of the popular corpus
(fanned out with ``dsl.ParallelFor``), ``merge_scores`` joins the shards' outputs into one
``item_serendipity`` for ``materialize``."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components import COMPONENT_KW, GPU_COMPONENT_KW


@dsl.component(**GPU_COMPONENT_KW)
def score_shard(data: Input[Dataset], tree: Input[Dataset], scores: Output[Dataset],
                metrics: Output[Metrics], shard: int, num_shards: int,
                model_uri: str = "models:/serendip-mllm@champion", mlflow_uri: str = "",
                state_dir: str = "", coverage: float = 0.8, batch_size: int = 32,
                chunk_size: int = 256, k: int = 3) -> str:
    """Like ``batch_score`` for the items with ``crc32(item_id) % num_shards == shard``; the
    coverage selection is global, so the shards together score exactly the corpus one worker
    would. ``state_dir`` (a volume) keeps each shard's incremental state in ``shard-<i>/``."""
    import json
    import os

    from serendip.scoring import ScoringConfig, scoring_stage

    if mlflow_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    state = os.path.join(state_dir, f"shard-{shard}") if state_dir else scores.path
    if model_uri.startswith(("models:/", "runs:/")):
        from serendip.platform.registry import load_predictor

        predictor = load_predictor(model_uri, state)
    else:
        from serendip.mllm.inference import ClusterPredictor

        predictor = ClusterPredictor.load(model_uri)
    cfg = ScoringConfig(coverage=coverage, batch_size=batch_size, chunk_size=chunk_size, k=k,
                        progress=False, shard=shard, num_shards=num_shards)
    result = scoring_stage(data.path, tree.path, state, predictor, cfg, out_dir=scores.path)
    s = result.stats
    for key in ("shard_items", "scored", "reused", "seconds"):
        if key in s:
            metrics.log_metric(key, float(s[key]))
    return json.dumps(s, default=str)


@dsl.component(**COMPONENT_KW)
def merge_scores(parts: Input[list[Dataset]], scores: Output[Dataset]) -> str:
    """Concatenate the shards' item_serendipity (disjoint by construction) and union their
    item_clusters (new items each shard placed in the same tree)."""
    import json

    from serendip.scoring import merge_shards

    return json.dumps(merge_shards([p.path for p in parts], scores.path))


@dsl.component(**COMPONENT_KW)
def assign_new(data: Input[Dataset], tree: Input[Dataset], placed: Output[Dataset]) -> str:
    """Place items that are not in the tree yet (nearest centroid per level) before scoring."""
    import json

    from serendip.scoring import place_new_items

    return json.dumps(place_new_items(data.path, tree.path, placed.path))


@dsl.component(**COMPONENT_KW)
def plan_shards(num_shards: int) -> list:
    """The shard indices ``ParallelFor`` fans out over."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return list(range(num_shards))
