"""MLflow adapter: tracking (params, per-step metrics, plots), the model registry, aliases and
the promotion gate.

* Tracking URI: ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<workdir>/mlflow/mlflow.db``;
  with a sqlite store, artifacts live next to the database (``<db dir>/artifacts``), never in
  the current directory's ``./mlruns``. Telemetry is off.
* ``serendip-mllm`` is logged as an MLflow *model from code* (:mod:`.mllm_pyfunc`) with the saved
  model directory (safetensors + processor) as its artifact and an explicit signature and pip
  requirements (MLflow's inferred requirements drag in torchvision, DESIGN §7): nothing pickled.
* Promotion uses aliases, not the deprecated stages: a new version gets ``@challenger``;
  :func:`promote` moves ``@champion`` to it only when its held-out metric is not worse than the
  champion's, and otherwise refuses with a message and leaves the champion alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from serendip.errors import ConfigError, SerendipError

MLLM = "serendip-mllm"
CHALLENGER, CHAMPION = "challenger", "champion"
GATE_METRIC = "recall_constrained"
PYFUNC_CODE = Path(__file__).with_name("mllm_pyfunc.py")


# ---------------------------------------------------------------------------- tracking
def default_uri(workdir: str | os.PathLike) -> str:
    db = Path(workdir).resolve() / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def setup(workdir: str | os.PathLike | None = None) -> str:
    """Point MLflow at the run's store; returns the tracking URI in use."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import logging
    import warnings

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*input example was not provided.*")

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        if workdir is None:
            raise ConfigError("no MLflow store", field="workdir",
                              fix="pass --workdir or set MLFLOW_TRACKING_URI")
        uri = default_uri(workdir)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _artifact_root(uri: str) -> str | None:
    """For a sqlite store, artifacts go next to the database file (not ./mlruns)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.parent / "artifacts").resolve().as_uri()
    return None


def ensure_experiment(name: str, workdir: str | os.PathLike | None = None) -> str:
    import mlflow

    uri = setup(workdir)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = _artifact_root(uri)
    return mlflow.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)


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

    exp_id = ensure_experiment(experiment, workdir)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags) as run:
        if params:
            mlflow.log_params(flatten(params))
        yield run


def log_metrics(metrics: dict, step: int | None = None) -> None:
    """Numeric entries of ``metrics`` to the active run (at ``step`` for curves)."""
    import mlflow

    clean = {k: float(v) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_artifact(path: str | os.PathLike, artifact_path: str | None = None) -> None:
    import mlflow

    p = Path(path)
    if p.is_dir():
        mlflow.log_artifacts(str(p), artifact_path=artifact_path)
    else:
        mlflow.log_artifact(str(p), artifact_path=artifact_path)


# ---------------------------------------------------------------------------- registry
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
    for k, v in (metrics or {}).items():
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            client.set_model_version_tag(name, version, k, str(v))
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version


def resolve_version(name: str, ref: str) -> str:
    """A version number from ``"3"``, ``"@champion"`` or ``"champion"``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    ref = str(ref)
    if ref.isdigit():
        return ref
    alias = ref.lstrip("@")
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        raise SerendipError(f"{name} has no version with alias @{alias}", field="alias",
                            fix="run serendip finetune (sets @challenger) first") from None


def alias_version(name: str, alias: str) -> str | None:
    try:
        return resolve_version(name, "@" + alias)
    except SerendipError:
        return None


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


def load_predictor(model_uri: str = f"models:/{MLLM}@{CHAMPION}",
                   workdir: str | os.PathLike | None = None):
    """The :class:`ClusterPredictor` behind a registered model URI; its ``model_version`` is
    ``<name>/v<version>`` when the URI names a registered model."""
    import mlflow

    setup(workdir)
    try:
        pyfunc = mlflow.pyfunc.load_model(model_uri)
    except Exception as e:  # MlflowException, OSError: unknown name/alias/version
        raise SerendipError(f"cannot load {model_uri}: {str(e).splitlines()[0][:200]}",
                            field="model", fix="check the name and alias (serendip promote "
                                               "sets @champion)") from None
    wrapper = pyfunc.unwrap_python_model()
    predictor = wrapper.predictor
    predictor.model_dir = Path(wrapper.model_dir)
    if model_uri.startswith("models:/"):
        ref = model_uri[len("models:/"):]
        name, _, tail = ref.replace("@", "/@").partition("/")
        version = resolve_version(name, tail) if tail else ""
        predictor.model_version = f"{name}/v{version}" if version else name
    return predictor


# ---------------------------------------------------------------------------- promotion
@dataclass
class PromotionResult:
    promoted: bool
    message: str
    challenger: str
    champion_before: str | None
    champion_after: str | None
    challenger_value: float | None = None
    champion_value: float | None = None


def promote(name: str = MLLM, version: str | None = None, metric: str = GATE_METRIC,
            workdir: str | os.PathLike | None = None,
            evaluate: Callable[[str], float] | None = None) -> PromotionResult:
    """Move ``@champion`` to the challenger (``version`` or ``@challenger``) unless its held-out
    ``metric`` is worse than the champion's. ``evaluate(model_uri)`` re-measures both on the
    same data instead of trusting the recorded values (runs may have used other splits)."""
    from mlflow import MlflowClient

    setup(workdir)
    client = MlflowClient()
    challenger = resolve_version(name, version or "@" + CHALLENGER)
    champion = alias_version(name, CHAMPION)
    if champion is None:
        client.set_registered_model_alias(name, CHAMPION, challenger)
        return PromotionResult(True, f"{name} v{challenger} is the first champion", challenger,
                               None, challenger)
    if champion == challenger:
        return PromotionResult(False, f"{name} v{challenger} is already the champion",
                               challenger, champion, champion)

    def value(v: str) -> float:
        if evaluate is not None:
            return float(evaluate(f"models:/{name}/{v}"))
        return version_metric(name, v, metric)

    ch_val, champ_val = value(challenger), value(champion)
    if ch_val >= champ_val:
        client.set_registered_model_alias(name, CHAMPION, challenger)
        client.set_model_version_tag(name, challenger, "promoted_over", champion)
        return PromotionResult(True, f"promoted {name} v{challenger} to @champion: {metric} "
                                     f"{ch_val:.4f} >= v{champion}'s {champ_val:.4f}",
                               challenger, champion, challenger, ch_val, champ_val)
    return PromotionResult(False, f"refused: {name} v{challenger} has {metric} {ch_val:.4f}, "
                                  f"worse than champion v{champion}'s {champ_val:.4f}; "
                                  f"@champion stays on v{champion}",
                           challenger, champion, champion, ch_val, champ_val)
