"""MLflow runs: params (flattened), per-step metrics, artifacts, the training tables as dataset
inputs, and the KFP run every run and model version of a pipeline is tagged with."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serendip.platform.registry.errors import mlflow_errors, translated
from serendip.platform.registry.store import ensure_experiment

KFP_RUN_ENV = "SERENDIP_KFP_RUN_ID"          # set by the KFP components from the run's placeholder
KFP_RUN_NAME_ENV = "SERENDIP_KFP_RUN_NAME"


def kfp_tags() -> dict[str, str]:
    """``{"kfp_run_id": ..., "kfp_run_name": ...}`` when running inside a KFP task (the
    components export the run's id from ``dsl.PIPELINE_JOB_ID_PLACEHOLDER``), else ``{}``.
    Every MLflow run and model version a pipeline creates carries them."""
    out = {}
    for key, env in (("kfp_run_id", KFP_RUN_ENV), ("kfp_run_name", KFP_RUN_NAME_ENV)):
        value = os.environ.get(env, "")
        if value and not value.startswith("{{"):          # an unresolved placeholder: none
            out[key] = value
    return out


def set_kfp_run(run_id: str = "", run_name: str = "") -> None:
    """Record the KFP run a component belongs to (read by :func:`kfp_tags`)."""
    for env, value in ((KFP_RUN_ENV, run_id), (KFP_RUN_NAME_ENV, run_name)):
        if value:
            os.environ[env] = value


def _digest(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


@contextmanager
def _quiet_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def log_tables(tables: dict[str, str | os.PathLike], context: str = "training") -> list[str]:
    """Log each existing table file as an MLflow dataset input of the active run
    (``mlflow.log_input``: name, source path, content digest, row count), so the run — and the
    model version registered from it — names the data it was trained on. Returns the names
    logged; missing files are skipped."""
    import mlflow
    import pyarrow.parquet as pq
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    logged = []
    with mlflow_errors("log dataset inputs"), _quiet_warnings():
        for name, path in tables.items():
            p = Path(path)
            if not p.is_file():
                continue
            rows = pq.ParquetFile(p).metadata.num_rows if p.suffix == ".parquet" else None
            ds = MetaDataset(source=resolve_dataset_source(str(p.resolve())), name=name,
                             digest=_digest(p))
            mlflow.log_input(ds, context=context,
                             tags={"rows": str(rows)} if rows is not None else None)
            logged.append(name)
    return logged


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


@contextmanager
def start_run(experiment: str, workdir: str | os.PathLike | None = None,
              run_name: str | None = None, params: dict | None = None,
              tags: dict | None = None) -> Iterator:
    """An MLflow run in ``experiment`` with (flattened) ``params`` logged."""
    import mlflow

    with mlflow_errors(f"run in {experiment}"):
        exp_id = ensure_experiment(experiment, workdir)
        with mlflow.start_run(experiment_id=exp_id, run_name=run_name,
                              tags={**kfp_tags(), **(tags or {})}) as run:
            if params:
                mlflow.log_params(flatten(params))
            yield run


@translated
def log_metrics(metrics: dict, step: int | None = None) -> None:
    """Numeric entries of ``metrics`` to the active run (at ``step`` for curves)."""
    import mlflow

    clean = {k: float(v) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
    if clean:
        mlflow.log_metrics(clean, step=step)


@translated
def log_artifact(path: str | os.PathLike, artifact_path: str | None = None) -> None:
    import mlflow

    p = Path(path)
    if p.is_dir():
        mlflow.log_artifacts(str(p), artifact_path=artifact_path)
    else:
        mlflow.log_artifact(str(p), artifact_path=artifact_path)
