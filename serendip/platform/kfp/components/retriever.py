"""``train_retriever`` component: sessions + cluster tree → sequence retriever, registered as
``serendip-retriever`` (@challenger, then the promotion gate)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from serendip.platform.kfp.components import COMPONENT_KW


@dsl.component(**COMPONENT_KW)
def train_retriever(data: Input[Dataset], tree: Input[Dataset], retriever: Output[Model],
                    metrics: Output[Metrics], mlflow_uri: str = "", settings: dict = None,
                    register: bool = True, kfp_run_id: str = "", kfp_run_name: str = "",
                    force: bool = False) -> str:
    """Train on ``data`` (items, interactions) with ``tree``'s item_clusters.

    ``retriever`` becomes a directory with ``retriever/`` (safetensors weights, index parquet,
    TorchScript export, config.json); ``settings`` holds RetrieverConfig fields. With
    ``register`` (and ``mlflow_uri`` or ``MLFLOW_TRACKING_URI``) the model is registered and
    gated on held-out NDCG@10 within the true next cluster; the run and the version carry
    ``kfp_run_id`` / ``kfp_run_name`` tags and the training tables as dataset inputs. Returns
    a JSON summary. ``force`` promotes past a refusing gate (recorded on the version).
    """
    import json
    import os

    from serendip.config import load_config
    from serendip.retriever import RetrieverConfig, retriever_stage

    # every setting checked before any data is read
    cfg = load_config(RetrieverConfig, settings=settings)
    result = retriever_stage(data.path, tree.path, retriever.path, cfg, progress=False)
    m = result.metrics
    retriever.metadata.update({"model_version": result.retriever.model_version,
                               "n_items": m["n_items"]})
    summary = {"model_version": result.retriever.model_version}
    for key in ("hit@10", "ndcg@10", "popularity_hit@10", "popularity_ndcg@10"):
        if key in m:
            metrics.log_metric(key.replace("@", "_at_"), float(m[key]))
            summary[key] = m[key]
    if register:
        if mlflow_uri:
            os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
        from serendip.data.io import table_path
        from serendip.platform.registry import set_kfp_run
        from serendip.platform.retriever_registry import register_and_promote

        set_kfp_run(kfp_run_id, kfp_run_name)
        tables = {"interactions": table_path(data.path, "interactions"),
                  "item_clusters": table_path(tree.path, "item_clusters")}
        summary["registry"] = register_and_promote(result.out_dir, m, cfg, data.path,
                                                   tables=tables,
                                                   **({"force": True} if force else {}))
    return json.dumps(summary)
