"""``batch_score`` and ``materialize`` components: the popular corpus → item_serendipity
(incremental, resumable) → Feast online store."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components import COMPONENT_KW, GPU_COMPONENT_KW


@dsl.component(**GPU_COMPONENT_KW)
def batch_score(data: Input[Dataset], tree: Input[Dataset], scores: Output[Dataset],
                metrics: Output[Metrics], model_uri: str = "models:/serendip-mllm@champion",
                mlflow_uri: str = "", state_dir: str = "", coverage: float = 0.8,
                batch_size: int = 32, chunk_size: int = 256, k: int = 3) -> str:
    """Score the most popular items of ``data`` until ``coverage`` of impressions with the MLLM
    at ``model_uri`` (registry URI or model directory), constrained decoding in batches.

    ``state_dir`` is a persistent directory (a volume) holding the previous results and the
    committed chunks: with it, runs are incremental and a retried pod resumes where the killed
    one stopped; without it the output directory is used (a fresh run). ``scores`` becomes a
    directory with item_serendipity.parquet, item_clusters.parquet (new items placed in the
    tree) and clusters.parquet. Returns the run's statistics as JSON.
    """
    import json
    import os

    from serendip.scoring import ScoringConfig, scoring_stage

    if mlflow_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    if model_uri.startswith(("models:/", "runs:/")):
        from serendip.platform.registry import load_predictor

        predictor = load_predictor(model_uri, state_dir or scores.path)
    else:
        from serendip.mllm.inference import ClusterPredictor

        predictor = ClusterPredictor.load(model_uri)
    cfg = ScoringConfig(coverage=coverage, batch_size=batch_size, chunk_size=chunk_size, k=k,
                        progress=False)
    result = scoring_stage(data.path, tree.path, state_dir or scores.path, predictor, cfg,
                           out_dir=scores.path)
    s = result.stats
    scores.metadata.update({"model_version": s["model_version"], "rows": result.table.num_rows})
    for key in ("selected", "coverage_achieved", "scored", "reused", "assigned_new_items",
                "seconds"):
        metrics.log_metric(key, float(s[key]))
    return json.dumps(s, default=str)


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
