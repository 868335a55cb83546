"""MLflow registration of the retriever as ``serendip-retriever``, on top of :mod:`.registry`
(same store, aliases and promotion gate as ``serendip-mllm``).

The saved retriever directory is logged as the artifact of a pyfunc *model from code*
(:mod:`.retriever_pyfunc`): weights stay safetensors, nothing is pickled. A new version gets
``@challenger``; the gate moves ``@champion`` only when its held-out NDCG@10 within the true
next cluster is not worse than the champion's **and** above popularity within that cluster on
the same cases (``popularity_ndcg_at_10``, recorded by train-retriever) by more than a margin
(issue 15).
"""

from __future__ import annotations

import os
from pathlib import Path

from serendip.errors import ConfigError
from serendip.platform import registry

RETRIEVER = "serendip-retriever"
GATE_METRIC = "ndcg_at_10"      # MLflow metric names cannot hold '@'
PYFUNC_CODE = Path(__file__).with_name("retriever_pyfunc.py")


def mlflow_metrics(metrics: dict) -> dict[str, float]:
    """Flat numeric metrics with MLflow-safe names (``ndcg@10`` → ``ndcg_at_10``)."""
    out: dict[str, float] = {}

    def put(key: str, v) -> None:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key.replace("@", "_at_")] = float(v)

    for k, v in metrics.items():
        if isinstance(v, dict):
            for k2, v2 in registry.flatten(v, k + ".").items():
                try:
                    put(k2, float(v2))
                except ValueError:
                    pass
        else:
            put(k, v)
    return out


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    inputs = Schema([ColSpec(Array(DataType.string), "history", required=False),
                     ColSpec(DataType.string, "cluster_id", required=False)])
    outputs = Schema([ColSpec(DataType.long, "input_index"), ColSpec(DataType.long, "rank"),
                      ColSpec(DataType.string, "item_id"), ColSpec(DataType.double, "score")])
    return ModelSignature(inputs=inputs, outputs=outputs,
                          params=ParamSchema([ParamSpec("k", DataType.long, 10)]))


@registry.translated
def register_retriever(retriever_dir: str | os.PathLike, metrics: dict,
                       workdir: str | os.PathLike | None = None, params: dict | None = None,
                       alias: str | None = registry.CHALLENGER, name: str = RETRIEVER,
                       tables: dict | None = None) -> str:
    """Log a run (params, metrics, loss curve) with the retriever as a pyfunc model, register
    a new version of ``name`` tagged with its metrics, set ``alias``; returns the version."""
    import mlflow
    from mlflow import MlflowClient

    d = Path(retriever_dir)
    if not (d / "config.json").exists() or not (d / "model.safetensors").exists():
        raise ConfigError(f"{d} is not a saved retriever", field="retriever_dir",
                          fix="register the output of serendip train-retriever")
    flat = mlflow_metrics({k: v for k, v in metrics.items() if k != "train_loss"})
    with registry.start_run("serendip-retriever", workdir, run_name="train-retriever",
                            params=params):
        if tables:
            registry.log_tables(tables)
        for step, loss in enumerate(metrics.get("train_loss", []), start=1):
            mlflow.log_metric("train_loss", float(loss), step=step)
        registry.log_metrics(flat)
        info = mlflow.pyfunc.log_model(
            name="retriever", python_model=str(PYFUNC_CODE),
            artifacts={"retriever_dir": str(d)}, signature=signature(),
            pip_requirements=registry.pip_requirements(), registered_model_name=name,
            metadata={"serendip_model_version": metrics.get("model_version", "")})
    version = str(info.registered_model_version)
    client = MlflowClient()
    for k, v in {**flat, **registry.kfp_tags()}.items():
        client.set_model_version_tag(name, version, k, str(v))
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


def register_and_promote(retriever_dir: str | os.PathLike, metrics: dict, cfg,
                         workdir: str | os.PathLike, promote: bool = True,
                         tables: dict | None = None, margin: float = 0.0,
                         force: bool = False) -> dict:
    """Register (``@challenger``) and run the gate (not worse than the champion, above
    in-cluster popularity by more than ``margin``; ``force`` overrides, recorded on the
    version); returns what happened, for the CLI/KFP. ``tables`` (name → parquet path) are
    logged as the run's dataset inputs."""
    from serendip.config import to_dict

    version = register_retriever(retriever_dir, metrics, workdir, params=to_dict(cfg),
                                 tables=tables)
    out = {"name": RETRIEVER, "version": version, "alias": registry.CHALLENGER}
    if promote:
        res = registry.promote(RETRIEVER, version, metric=GATE_METRIC, workdir=workdir,
                               margin=margin, force=force)
        out.update(promoted=res.promoted, message=res.message, champion=res.champion_after,
                   forced=res.forced)
        if res.baseline is not None:
            out["baseline"] = {"method": res.baseline.method, "value": res.baseline.value}
    return out


def load_retriever(model_uri: str = f"models:/{RETRIEVER}@{registry.CHAMPION}",
                   workdir: str | os.PathLike | None = None):
    """The :class:`Retriever` behind a registered model URI (e.g. ``@champion``), downloaded by
    :func:`serendip.platform.registry.download_model`.

    Raises:
        SerendipError: an unknown name, alias or version. ServiceError: no tracking server."""
    from serendip.retriever import Retriever

    local, _, _ = registry.download_model(model_uri, workdir,
                                          markers=("model.safetensors", "config.json"))
    return Retriever.load(local)
