"""KFP adapter: compile, run locally with ``kfp.local``, or submit to a KFP endpoint.

The same pipeline function serves both: locally the SubprocessRunner executes each component
in this interpreter's environment (no containers); on Kubernetes each component runs in the
project image. Everything a local run makes lives under its work directory.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from serendip.errors import SerendipError


def _pipeline(name: str):
    import pipelines

    return pipelines.load(name)


def _params(func) -> set[str]:
    """Parameter names of a @dsl.pipeline (a GraphComponent wrapping the Python function)."""
    return set(inspect.signature(getattr(func, "pipeline_func", func)).parameters)


def _check_params(name: str, func, params: dict[str, Any]) -> None:
    known = _params(func)
    unknown = set(params) - known
    if unknown:
        raise SerendipError(f"unknown parameter(s) {sorted(unknown)} for pipeline {name!r}",
                            field="--set", fix=f"use one of {sorted(known)}")


def compile_all(out_dir: str | os.PathLike, names: list[str] | None = None) -> list[Path]:
    from kfp import compiler

    import pipelines

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names or list(pipelines.PIPELINES):
        path = out / f"{name}.yaml"
        tmp = path.with_name(f".{name}.tmp.yaml")
        compiler.Compiler().compile(_pipeline(name), str(tmp))
        os.replace(tmp, path)
        paths.append(path)
    return paths


def local_defaults(workdir: Path, data_uri: str | None) -> dict[str, Any]:
    workdir = workdir.resolve()
    return {"data_uri": str(Path(data_uri).resolve()) if data_uri else str(workdir),
            "mlflow_uri": os.environ.get("MLFLOW_TRACKING_URI",
                                         f"sqlite:///{workdir / 'mlflow' / 'mlflow.db'}")}


def run_local(name: str, workdir: str | os.PathLike, data_uri: str | None,
              params: dict[str, Any]) -> dict[str, Any]:
    """Run pipeline ``name`` with kfp.local; returns its outputs (artifact paths, values)."""
    from kfp import local

    func = _pipeline(name)
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    args = {k: v for k, v in local_defaults(wd, data_uri).items() if k in _params(func)}
    args.update(params)
    _check_params(name, func, args)
    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str((wd / "kfp").resolve()), raise_on_error=True)
    try:
        task = func(**args)
    except RuntimeError as e:  # kfp.local: "Pipeline ... finished with status FAILURE ..."
        first = str(e).splitlines()[0]
        raise SerendipError(f"pipeline {name!r} failed: {first}", field=name,
                            fix="read the failing task's log above; its outputs are under "
                                f"{wd / 'kfp'}") from None
    outputs = {}
    for key, value in (getattr(task, "outputs", None) or {}).items():
        outputs[key] = getattr(value, "path", value)
    return outputs


def submit(name: str, host: str, experiment: str, data_uri: str | None,
           params: dict[str, Any]) -> str:
    """Submit to a KFP API server; production parameters (data, MLflow) come from ``params``."""
    import kfp

    func = _pipeline(name)
    args = dict(params)
    if data_uri:
        args["data_uri"] = data_uri
    _check_params(name, func, args)
    client = kfp.Client(host=host)
    run = client.create_run_from_pipeline_func(func, arguments=args, experiment_name=experiment,
                                               enable_caching=True)
    return run.run_id
