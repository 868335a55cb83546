"""The scoring pipeline's components: ``assign_new`` places new items in the tree,
``plan_shards`` lists the shards, ``score_shard`` scores one stable hash-shard of the popular
corpus (fanned out with ``dsl.ParallelFor``; one shard of one is the whole corpus),
``merge_scores`` joins the shards' outputs and ``materialize`` writes them to Feast's online
store (serendip.scoring, serendip.platform.features)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from serendip.platform.kfp.components import COMPONENT_KW, GPU_COMPONENT_KW


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


@dsl.component(**GPU_COMPONENT_KW)
def score_shard(data: Input[Dataset], tree: Input[Dataset], scores: Output[Dataset],
                metrics: Output[Metrics], shard: int = 0, num_shards: int = 1,
                model_uri: str = "models:/serendip-mllm@champion", mlflow_uri: str = "",
                state_dir: str = "", coverage: float = 0.8, batch_size: int = 32,
                chunk_size: int = 256, k: int = 3) -> str:
    """Score the most popular items of ``data`` until ``coverage`` of impressions with the MLLM
    at ``model_uri`` (registry URI or model directory), constrained decoding in batches — the
    items with ``crc32(item_id) % num_shards == shard``. The coverage selection is global, so
    the shards together score exactly the corpus one worker (``num_shards=1``, the defaults)
    would.

    ``state_dir`` is a persistent directory (a volume) holding each shard's previous results
    and committed chunks in ``shard-<i>/``: with it, runs are incremental and a retried pod
    resumes where the killed one stopped; without it the output directory is used (a fresh
    run). ``scores`` becomes a directory with item_serendipity.parquet, item_clusters.parquet
    (new items placed in the tree) and clusters.parquet. Returns the run's statistics as JSON.
    """
    import json
    import os

    from serendip.scoring import ScoringConfig, scoring_stage

    if mlflow_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    state = os.path.join(state_dir, f"shard-{shard}") if state_dir else scores.path
    from serendip.mllm.models import load_predictor

    predictor = load_predictor(model_uri, state)     # registry URI or model directory
    cfg = ScoringConfig(coverage=coverage, batch_size=batch_size, chunk_size=chunk_size, k=k,
                        shard=shard, num_shards=num_shards)
    result = scoring_stage(data.path, tree.path, state, predictor, cfg, out_dir=scores.path,
                           progress=False)
    s = result.stats
    scores.metadata.update({"model_version": s["model_version"], "rows": result.table.num_rows,
                            "shard": shard, "num_shards": num_shards})
    for key in ("selected", "coverage_achieved", "shard_items", "scored", "reused",
                "assigned_new_items", "seconds"):
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
def materialize(scores: Input[Dataset], feature_root: str = "") -> str:
    """Write the Feast offline sources from ``scores`` (item_serendipity, item_clusters,
    clusters), ``apply`` the feature repo and ``materialize_incremental`` into the online store.

    The repo copy (registry, sqlite online store, offline parquet) lives in
    ``<feature_root>/feature_repo`` — the serving work directory locally; in production set
    ``SERENDIP_FEAST_ONLINE_STORE=redis`` and the repo's data goes to Redis. Default root: the
    ``scores`` directory. Returns the materialization statistics as JSON.
    """
    import json

    from serendip.platform import features

    return json.dumps(features.sync(feature_root or scores.path, tables_dir=scores.path),
                      default=str)
