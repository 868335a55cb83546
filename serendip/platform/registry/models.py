"""The model registry: ``serendip-mllm`` logged as an MLflow *model from code*
(:mod:`serendip.platform.mllm_pyfunc`) with the saved model directory (safetensors + processor)
as its artifact and an explicit signature and pip requirements (MLflow's inferred requirements
drag in torchvision): nothing pickled. Versions are found by number or alias (``@challenger``,
``@champion``) and downloaded as saved model directories."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

from serendip.errors import ConfigError, SerendipError, ServiceError
from serendip.platform.registry.errors import (
    CLIENT_CODES,
    first_line,
    is_mlflow_error,
    tracking_uri,
    translate,
    translated,
)
from serendip.platform.registry.runs import kfp_tags
from serendip.platform.registry.store import setup

MLLM = "serendip-mllm"
CHALLENGER, CHAMPION = "challenger", "champion"
PYFUNC_CODE = Path(__file__).parents[1] / "mllm_pyfunc.py"


def mllm_signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    inputs = Schema([ColSpec(DataType.string, "title"),
                     ColSpec(DataType.string, "context_description"),
                     ColSpec(Array(DataType.string), "images", required=False)])
    outputs = Schema([ColSpec(DataType.long, "input_index"), ColSpec(DataType.long, "rank"),
                      ColSpec(DataType.string, "cluster_id"),
                      ColSpec(DataType.string, "description"),
                      ColSpec(DataType.double, "score")])
    params = ParamSchema([ParamSpec("k", DataType.long, 1),
                          ParamSpec("constrained", DataType.boolean, True)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def pip_requirements() -> list[str]:
    """Pinned to this environment; ``serendip`` itself must be installed where it loads."""
    from importlib.metadata import version

    reqs = []
    for pkg in ("torch", "transformers", "peft", "safetensors", "tokenizers", "pillow",
                "numpy", "pandas", "pyarrow"):
        try:
            reqs.append(f"{pkg}=={version(pkg).split('+')[0]}")
        except Exception:  # pragma: no cover - optional package missing
            reqs.append(pkg)
    return reqs


@translated
def register_mllm(model_dir: str | os.PathLike, metrics: dict | None = None,
                  workdir: str | os.PathLike | None = None, run_id: str | None = None,
                  alias: str | None = CHALLENGER, name: str = MLLM) -> str:
    """Log ``model_dir`` as a pyfunc model in the active (or given) run, register a new
    version of ``name``, tag it with ``metrics`` and set ``alias`` on it; returns the version."""
    import mlflow
    from mlflow import MlflowClient

    d = Path(model_dir)
    if not (d / "serendip.json").exists():
        raise ConfigError(f"{d} is not a serendip model directory", field="model_dir",
                          fix="register the output of serendip finetune (mllm/<run>)")
    setup(workdir)
    ctx = mlflow.start_run(run_id=run_id) if run_id else nullcontext()
    with ctx:
        if mlflow.active_run() is None:
            raise SerendipError("no active MLflow run", field="run_id",
                                fix="call inside start_run(...) or pass run_id")
        info = mlflow.pyfunc.log_model(
            name="mllm", python_model=str(PYFUNC_CODE), artifacts={"model_dir": str(d)},
            signature=mllm_signature(), pip_requirements=pip_requirements(),
            registered_model_name=name, metadata={"serendip_model_dir": d.name})
    version = str(info.registered_model_version)
    client = MlflowClient()
    for k, v in {**(metrics or {}), **kfp_tags()}.items():
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            client.set_model_version_tag(name, version, k, str(v))
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


def check_model(name: str) -> None:
    """A one-line SerendipError naming the registered models when ``name`` is not one.

    Raises:
        SerendipError: no registered model ``name`` (field ``name``).
        ServiceError: the tracking server cannot be reached."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code not in CLIENT_CODES:
            raise
        known = sorted(m.name for m in client.search_registered_models(max_results=50))
        raise SerendipError(f"no registered model {name!r} in {tracking_uri()}",
                            field="name", fix=(f"use one of {known}" if known else
                                               "register one first (serendip finetune / "
                                               "train-retriever)")) from None


@translated
def resolve_version(name: str, ref: str) -> str:
    """A version number (as text) from ``"3"``, ``"@champion"`` or ``"champion"``, checked to
    exist in the registry.

    Raises:
        SerendipError: unknown model name, version or alias (one line, field named).
        ServiceError: the tracking server cannot be reached."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    check_model(name)
    ref = str(ref).strip()
    if ref.isdigit():
        try:
            return str(client.get_model_version(name, ref).version)
        except MlflowException as e:
            if e.error_code not in CLIENT_CODES:
                raise
            versions = sorted(int(v.version) for v in
                              client.search_model_versions(f"name='{name}'"))
            have = f"{versions[0]}..{versions[-1]}" if versions else "none"
            raise SerendipError(f"{name} has no version {ref} (versions: {have})",
                                field="version",
                                fix="pass an existing version, or omit --version to use "
                                    "@challenger") from None
    alias = ref.lstrip("@")
    if not alias:
        raise SerendipError("empty version or alias", field="version",
                            fix="pass a version number or an alias such as @champion")
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as e:
        if e.error_code not in CLIENT_CODES:
            raise
        fix = {CHAMPION: "run serendip promote first (it sets @champion)",
               CHALLENGER: "register a version first (serendip finetune / train-retriever "
                           "set @challenger)"}.get(
            alias, f"use @{CHAMPION}, @{CHALLENGER} or a version number")
        raise SerendipError(f"{name} has no version with alias @{alias}", field="alias",
                            fix=fix) from None


@translated
def alias_version(name: str, alias: str) -> str | None:
    try:
        return resolve_version(name, "@" + alias)
    except SerendipError:
        return None


@translated
def version_metric(name: str, version: str, metric: str) -> float:
    """The held-out ``metric`` recorded for a version (its tag, else its run's metric)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    mv = client.get_model_version(name, version)
    if metric in mv.tags:
        return float(mv.tags[metric])
    if mv.run_id:
        value = client.get_run(mv.run_id).data.metrics.get(metric)
        if value is not None:
            return float(value)
    raise SerendipError(f"{name} v{version} has no recorded {metric!r}", field="metric",
                        fix="register versions with serendip finetune, or pass --reevaluate")


def download_model(model_uri: str, workdir: str | os.PathLike | None = None,
                   markers: tuple[str, ...] = ("serendip.json",),
                   dest: str | os.PathLike | None = None) -> tuple[Path, str, str]:
    """Download the artifacts of ``model_uri`` (``models:/<name>@<alias>``,
    ``models:/<name>/<version>`` or ``runs:/<run>/<path>``) and return ``(directory, name,
    version)``: the saved model directory inside (the first holding every file in
    ``markers``: the MLLM's ``serendip.json`` by default), the registered name and the version
    number (both empty for a ``runs:/`` URI). With ``dest`` the download is kept as
    ``dest/<name>-v<version>`` and reused; without it, it goes to a temporary directory.

    The registry part of :func:`serendip.mllm.models.load_predictor` (the one "registry URI or
    directory → predictor" path) and of ``serendip export``'s champion lookup.

    Raises:
        SerendipError: an unknown name, alias or version (one line, field named), or a
            version that holds no saved model directory. ServiceError: the tracking server
            cannot be reached."""
    import tempfile

    import mlflow

    setup(workdir)
    name = version = ""
    if model_uri.startswith("models:/"):          # a clear line for unknown name/alias/version
        name, _, tail = model_uri[len("models:/"):].replace("@", "/@").partition("/")
        version = resolve_version(name, tail or "@" + CHAMPION)
    label = f"{name}-v{version}" if name else model_uri.split(":/", 1)[1].strip("/").replace(
        "/", "-")
    target = Path(dest) / label if dest is not None else Path(tempfile.mkdtemp()) / label
    if not target.exists():
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        uri = f"models:/{name}/{version}" if name else model_uri
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp))
        except Exception as e:  # MlflowException, OSError: an unknown run or path
            if is_mlflow_error(e) and isinstance(translate(e), ServiceError):
                raise translate(e, f"load {model_uri}") from None
            raise SerendipError(f"cannot load {model_uri}: {first_line(e)}",
                                field="model", fix="check the name and alias (serendip "
                                                   "promote sets @champion)") from None
        os.replace(tmp, target)
    found = sorted((p.parent for p in target.rglob(markers[0])
                    if all((p.parent / m).exists() for m in markers[1:])),
                   key=lambda d: (len(d.parts), str(d)))
    if not found:
        raise SerendipError(f"{model_uri} holds no saved model directory (no {markers[0]})",
                            field="model", fix="register models with the serendip commands")
    return found[0], name, version
