"""``finetune``, ``evaluate`` and ``promote`` components: the MLLM stage (serendip.mllm) with
MLflow tracking, registration as ``serendip-mllm`` and the alias-based promotion gate."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from serendip.platform.kfp.components import COMPONENT_KW, GPU_COMPONENT_KW


@dsl.component(**GPU_COMPONENT_KW)
def finetune(data: Input[Dataset], tree: Input[Dataset], examples: Input[Dataset],
             model: Output[Model], metrics: Output[Metrics], mlflow_uri: str = "",
             settings: dict = None, register: bool = True, kfp_run_id: str = "",
             kfp_run_name: str = "") -> str:
    """Fine-tune on ``examples`` (examples.parquet + curation.json) with ``tree``'s clusters and
    ``data``'s items. ``model`` becomes the saved model directory (safetensors + processor +
    serendip.json); ``settings`` holds FinetuneConfig fields (dotted keys for nested ones, e.g.
    ``prompt.strategy``, ``tiny.text_hidden``). With ``register`` the run is logged to MLflow
    (``mlflow_uri`` or ``MLFLOW_TRACKING_URI``) and a new ``serendip-mllm`` version gets
    ``@challenger``; the run and the version are tagged with ``kfp_run_id`` / ``kfp_run_name``
    (the pipeline passes its run's placeholders). Returns a JSON summary (metrics, baselines,
    version)."""
    import json
    import os

    from serendip.config import load_config
    from serendip.mllm.config import FinetuneConfig
    from serendip.mllm.stage import finetune_stage
    from serendip.platform.registry import set_kfp_run
    from serendip.platform.tracking import MLflowTracker

    set_kfp_run(kfp_run_id, kfp_run_name)
    if mlflow_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    cfg = load_config(FinetuneConfig, settings=settings)
    summary = finetune_stage(data.path, model.path, cfg, tree_dir=tree.path,
                             examples_dir=examples.path, progress=False,
                             tracker=MLflowTracker(data.path).connect() if register else None)
    model.metadata.update({"strategy": summary["strategy"], "method": summary["method"],
                           "registered_version": summary.get("registered_version", "")})
    for key, value in summary["metrics"].items():
        if key != "step" and isinstance(value, (int, float)):
            metrics.log_metric(key, float(value))
    for name, b in summary["baselines"].items():
        metrics.log_metric(f"baseline_{name}_recall", float(b["recall"]))
    return json.dumps(summary, default=str)


@dsl.component(**COMPONENT_KW)
def evaluate(data: Input[Dataset], tree: Input[Dataset], examples: Input[Dataset],
             model: Input[Model], metrics: Output[Metrics], report: Output[Markdown],
             mlflow_uri: str = "", k: int = 5, kfp_run_id: str = "",
             kfp_run_name: str = "", retriever: Input[Model] = None) -> str:
    """Held-out match rate and recall (with and without the trie), recall@k and the
    cluster-choice baselines for ``model`` — with ``retriever`` (the ``train_retriever``
    artifact, optional) also the retriever-ranked sibling, so the gate compares the model
    with the best of all three (issue 15); the markdown table goes to ``report``. Returns the
    JSON report."""
    import json
    import os
    import tempfile

    from serendip.evaluation.offline import evaluate_stage
    from serendip.platform.registry import set_kfp_run
    from serendip.platform.tracking import MLflowTracker

    set_kfp_run(kfp_run_id, kfp_run_name)

    if mlflow_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    use_mlflow = bool(mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    out = tempfile.mkdtemp(prefix="serendip-eval-")
    rep = evaluate_stage(data.path, model.path, out, k=k, tree_dir=tree.path,
                         examples_dir=examples.path, model_name=model.path,
                         retriever_dir=(os.path.join(retriever.path, "retriever")
                                        if retriever is not None else None),
                         tracker=MLflowTracker(data.path) if use_mlflow else None)
    with open(report.path, "w") as f:
        f.write(rep.pop("markdown"))
    for key, value in rep.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(key, float(value))
    return json.dumps(rep, default=str)


@dsl.component(**COMPONENT_KW)
def promote(mlflow_uri: str = "", name: str = "serendip-mllm", version: str = "",
            metric: str = "recall_constrained", baselines: str = "", margin: float = 0.0,
            force: bool = False) -> str:
    """The promotion gate: ``@champion`` moves to ``version`` (default ``@challenger``) only if
    its held-out ``metric`` is not worse than the champion's **and** it beats the best baseline
    by more than ``margin`` (issue 15). ``baselines`` is the JSON report of the ``evaluate``
    step (its baselines on the same held-out examples; the pipeline passes it), else the
    baselines recorded on the version are used. ``force`` promotes anyway (tagged
    ``promoted_forced`` on the version). A refusal is a normal outcome (``promoted: false``
    and the reason in ``message``), not a failed step."""
    import json
    import os

    from serendip.platform import registry

    if mlflow_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    registry.setup()
    challenger = registry.resolve_version(name, version or "@" + registry.CHALLENGER)
    baseline = (registry.baseline_from_report(json.loads(baselines), challenger,
                                              source="evaluate step")
                if baselines else None)
    res = registry.promote(name, challenger, metric=metric, baseline=baseline, margin=margin,
                           force=force)
    print(f"serendip promote: {res.message}")
    b = res.baseline
    return json.dumps({"promoted": res.promoted, "forced": res.forced, "message": res.message,
                       "challenger": res.challenger, "champion": res.champion_after,
                       "challenger_value": res.challenger_value,
                       "champion_value": res.champion_value,
                       "baseline": None if b is None else {"method": b.method,
                                                           "value": b.value,
                                                           "source": b.source},
                       "margin": res.margin})
