"""MLflow adapter: tracking (params, per-step metrics, plots), the model registry, aliases and
the promotion gate.

* Tracking URI: ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<workdir>/mlflow/mlflow.db``;
  with a sqlite store, artifacts live next to the database (``<db dir>/artifacts``), never in
  the current directory's ``./mlruns``. Telemetry is off.
* ``serendip-mllm`` is logged as an MLflow *model from code* (:mod:`.mllm_pyfunc`) with the saved
  model directory (safetensors + processor) as its artifact and an explicit signature and pip
  requirements (MLflow's inferred requirements drag in torchvision): nothing pickled.
* Promotion uses aliases, not the deprecated stages: a new version gets ``@challenger``;
  :func:`promote` moves ``@champion`` to it only when its held-out metric is not worse than the
  champion's **and** it beats the best baseline (issue 15: transition statistics, random
  sibling, retriever-ranked sibling for the MLLM; popularity within the cluster for the
  retriever) by more than a margin; otherwise it refuses in one line and leaves the champion
  alone. ``force`` overrides and is recorded on the version (``promoted_forced``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from serendip.errors import ConfigError, SerendipError, ServiceError

MLLM = "serendip-mllm"
CHALLENGER, CHAMPION = "challenger", "champion"
GATE_METRIC = "recall_constrained"
PYFUNC_CODE = Path(__file__).with_name("mllm_pyfunc.py")


# MLflow error codes that mean the caller named something that is not there or is malformed
CLIENT_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS",
                "INVALID_STATE", "BAD_REQUEST", "NOT_FOUND", "ENDPOINT_NOT_FOUND"}
URI_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:240]


def _tracking_uri() -> str:
    """The tracking URI in use, for messages (credentials in it masked)."""
    import re

    try:
        import mlflow

        uri = mlflow.get_tracking_uri()
    except Exception:  # pragma: no cover - mlflow itself broken
        uri = os.environ.get("MLFLOW_TRACKING_URI", "?")
    return re.sub(r"//[^/@]*@", "//***@", str(uri))


def translate(e: BaseException, what: str = "MLflow") -> SerendipError:
    """One-line project error for an exception raised by MLflow.

    Returns a :class:`SerendipError` (exit 2) for the caller's mistakes — an unknown model
    name, version or alias, an invalid value — and a :class:`ServiceError` (exit 3) when the
    tracking server cannot be reached or fails."""
    import requests
    from mlflow.exceptions import MlflowException

    uri = _tracking_uri()
    if isinstance(e, MlflowException):
        code = e.error_code
        msg = _first_line(e)
        if code in CLIENT_CODES:
            return SerendipError(f"{what}: {msg}", field="registry",
                                 fix="check the model name, version and alias "
                                     "(serendip finetune registers, serendip promote gates)")
        if msg.startswith("API request to") or "Max retries exceeded" in msg:
            return ServiceError(f"the MLflow tracking server at {uri} did not answer ({what})",
                                field="MLFLOW_TRACKING_URI",
                                fix="start the server or point MLFLOW_TRACKING_URI at a running "
                                    "one; the run can be repeated (finished steps resume)")
        return ServiceError(f"MLflow failed ({what}): {msg}", field="MLFLOW_TRACKING_URI",
                            fix="check the tracking server's log")
    if isinstance(e, (requests.exceptions.RequestException, ConnectionError, TimeoutError)):
        return ServiceError(f"the MLflow tracking server at {uri} did not answer ({what}): "
                            f"{_first_line(e)}", field="MLFLOW_TRACKING_URI",
                            fix="start the server or point MLFLOW_TRACKING_URI at a running one")
    raise TypeError(f"not an MLflow error: {e!r}")


def _is_mlflow_error(e: BaseException) -> bool:
    import requests
    from mlflow.exceptions import MlflowException

    return isinstance(e, (MlflowException, requests.exceptions.RequestException,
                          ConnectionError, TimeoutError))


@contextmanager
def mlflow_errors(what: str = "MLflow") -> Iterator[None]:
    """Turn MLflow exceptions raised inside into one-line project errors (see
    :func:`translate`); project errors pass through unchanged."""
    try:
        yield
    except SerendipError:
        raise
    except Exception as e:
        if not _is_mlflow_error(e):
            raise
        raise translate(e, what) from None


def _translated(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with mlflow_errors(func.__name__.replace("_", " ")):
            return func(*args, **kwargs)
    return wrapper


# ---------------------------------------------------------------------------- tracking
def check_uri(uri: str) -> str:
    """``uri`` if MLflow can use it as a tracking store, else a one-line ConfigError."""
    parsed = urlparse(uri)
    scheme = parsed.scheme.split("+")[0].lower()
    if len(scheme) <= 1:                      # a plain path (or a Windows drive letter)
        return uri
    if scheme not in URI_SCHEMES:
        raise ConfigError(f"tracking URI {uri!r} has an unknown scheme {scheme!r}",
                          field="MLFLOW_TRACKING_URI",
                          fix="use http://HOST:PORT of an MLflow server or sqlite:///PATH")
    if scheme in ("http", "https") and not parsed.hostname:
        raise ConfigError(f"tracking URI {uri!r} has no host", field="MLFLOW_TRACKING_URI",
                          fix="use http://HOST:PORT of an MLflow server")
    if scheme in ("http", "https"):
        try:
            _ = parsed.port
        except ValueError:
            raise ConfigError(f"tracking URI {uri!r} has an invalid port",
                              field="MLFLOW_TRACKING_URI",
                              fix="use http://HOST:PORT with a port in 1..65535") from None
    return uri


def default_uri(workdir: str | os.PathLike) -> str:
    db = Path(workdir).resolve() / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


_DEFAULTED: set[str] = set()       # work-dir default URIs this process chose itself


def setup(workdir: str | os.PathLike | None = None) -> str:
    """Point MLflow at the run's store; returns the tracking URI in use."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow retries a failed HTTP call 7 times with doubling back-off (minutes of silence when
    # the tracking server is down); a few quick retries ride out a restart and then fail.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    # against an HTTP server MLflow prints "View run ... at: URL" to stdout when a run ends,
    # which corrupted the JSON the CLI prints there; the run id is in that JSON anyway
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_PRINT_MODEL_URLS_ON_CREATION", "false")
    import logging
    import warnings

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*input example was not provided.*")

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri and uri in _DEFAULTED and workdir is not None:
        # mlflow.set_tracking_uri writes the URI back into the environment: a default chosen
        # for another work directory earlier in this process is not the user's setting
        uri = None
    if not uri:
        if workdir is None:
            raise ConfigError("no MLflow store", field="workdir",
                              fix="pass --workdir or set MLFLOW_TRACKING_URI")
        uri = default_uri(workdir)
        _DEFAULTED.add(uri)
    check_uri(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _artifact_root(uri: str) -> str | None:
    """For a sqlite store, artifacts go next to the database file (not ./mlruns)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.parent / "artifacts").resolve().as_uri()
    return None


@_translated
def ensure_experiment(name: str, workdir: str | os.PathLike | None = None) -> str:
    import mlflow

    uri = setup(workdir)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = _artifact_root(uri)
    return mlflow.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)


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


@_translated
def log_metrics(metrics: dict, step: int | None = None) -> None:
    """Numeric entries of ``metrics`` to the active run (at ``step`` for curves)."""
    import mlflow

    clean = {k: float(v) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
    if clean:
        mlflow.log_metrics(clean, step=step)


@_translated
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


@_translated
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
        raise SerendipError(f"no registered model {name!r} in {_tracking_uri()}",
                            field="name", fix=(f"use one of {known}" if known else
                                               "register one first (serendip finetune / "
                                               "train-retriever)")) from None


@_translated
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


@_translated
def alias_version(name: str, alias: str) -> str | None:
    try:
        return resolve_version(name, "@" + alias)
    except SerendipError:
        return None


@_translated
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
            if _is_mlflow_error(e) and isinstance(translate(e), ServiceError):
                raise translate(e, f"load {model_uri}") from None
            raise SerendipError(f"cannot load {model_uri}: {_first_line(e)}",
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


# ---------------------------------------------------------------------------- promotion
@dataclass
class GateBaseline:
    """The best baseline a challenger must beat before it may become ``@champion``.

    ``method``/``value``: the best baseline and its held-out value (higher is better).
    ``challenger_value``: the challenger measured on the **same cases** (a baselines report
    that scored the model); ``None`` means its recorded gate metric is compared instead.
    ``source``: where the figures came from (for the message and the version's tags)."""

    method: str
    value: float
    metric: str = "recall"
    challenger_value: float | None = None
    source: str = "recorded"

    def __post_init__(self) -> None:
        import math

        for name, v in (("value", self.value), ("challenger_value", self.challenger_value)):
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise SerendipError(f"baseline {name} {v!r} is not a finite number",
                                    field="baselines", fix="pass a report written by "
                                                           "serendip evaluate")


def check_margin(margin: float) -> float:
    """``margin`` as a float in [0, 1] (a recall/NDCG difference).

    Raises:
        SerendipError: not a finite number in [0, 1] (field ``--margin``)."""
    import math

    try:
        m = float(margin)
    except (TypeError, ValueError):
        m = float("nan")
    if not math.isfinite(m) or not 0.0 <= m <= 1.0:
        raise SerendipError(f"margin {margin!r} is not a number in [0, 1]", field="--margin",
                            fix="pass the lead over the best baseline the challenger needs, "
                                "e.g. --margin 0.02 (default 0: strictly above)")
    return m


def _version_number(model_version: str | None) -> str | None:
    """``"3"`` from ``"serendip-mllm/v3"`` (None for a model directory or nothing)."""
    import re

    m = re.fullmatch(r"[^/]+/v(\d+)", str(model_version or "").strip())
    return m.group(1) if m else None


def baseline_from_report(rep: dict, challenger: str | None = None,
                         source: str = "report") -> GateBaseline:
    """The best baseline (and the challenger on the same cases) from a report:

    * :func:`serendip.evaluation.baselines.baselines_stage`'s report (``case_sets``; also
      accepted nested under ``choice_baselines``): its first case set (every serendipitous
      pair of the held-out contexts), ``best_baseline`` and, when the report scored a model,
      that model's recall on the same cases;
    * ``serendip evaluate``'s offline report (``baselines`` name → ``{"recall": ...}`` and
      ``recall_constrained``, on the curated test split).

    A report measured on another registered version than ``challenger`` is refused.

    Raises:
        SerendipError: neither form, or the report is about another version (field
            ``baselines``)."""
    if not isinstance(rep, dict):
        raise SerendipError("the baselines report is not a JSON object", field="baselines",
                            fix="pass evaluation/mllm_offline.json or a baselines_stage report")
    nested = rep.get("choice_baselines")
    if isinstance(nested, dict) and "case_sets" in nested:
        rep = nested
    measured: list[str] = []
    if isinstance(rep.get("case_sets"), list) and rep["case_sets"]:
        cs = rep["case_sets"][0]
        methods = cs.get("methods", {})
        best = cs.get("best_baseline")
        if best not in methods:
            raise SerendipError("the baselines report names no best baseline",
                                field="baselines", fix="pass a report written by "
                                                       "baselines_stage / serendip evaluate")
        model = methods.get("model")
        measured = list((rep.get("model") or {}).get("model_versions", []) or [])
        out = GateBaseline(best, float(methods[best]["recall"]["value"]), "recall",
                           float(model["recall"]["value"]) if model else None,
                           f"{source}: {cs.get('cases', 'held-out cases')}, "
                           f"{cs.get('n_cases', '?')} cases")
    elif isinstance(rep.get("baselines"), dict) and rep["baselines"]:
        base = {k: float(v["recall"]) for k, v in rep["baselines"].items()
                if isinstance(v, dict) and "recall" in v}
        if not base:
            raise SerendipError("the report's baselines carry no recall", field="baselines",
                                fix="pass evaluation/mllm_offline.json")
        best = max(base, key=lambda k: (base[k], k))
        ch = rep.get("recall_constrained")
        measured = [rep["model_version"]] if rep.get("model_version") else []
        out = GateBaseline(best, base[best], "recall_constrained",
                           float(ch) if isinstance(ch, (int, float)) else None,
                           f"{source}: curated test split, {rep.get('n', '?')} examples")
    else:
        raise SerendipError("the report holds no baselines (no case_sets, no baselines)",
                            field="baselines", fix="pass evaluation/mllm_offline.json or the "
                                                   "JSON of a baselines_stage report")
    others = {_version_number(v) for v in measured} - {None}
    if challenger is not None and others and others != {str(challenger)}:
        raise SerendipError(f"the baselines report measured version(s) {sorted(others)}, not "
                            f"the challenger v{challenger}", field="baselines",
                            fix=f"evaluate the challenger (--model models:/<name>/{challenger})"
                                " or pass --reevaluate")
    return out


def recorded_baseline(name: str, version: str, metric: str) -> GateBaseline | None:
    """The best baseline recorded on a version's tags: ``baseline_<method>_recall`` (the MLLM,
    same held-out examples as its recall) or ``popularity_<metric>`` (the retriever:
    popularity within the true next cluster on its held-out cases). None when none is."""
    import re

    from mlflow import MlflowClient

    tags = MlflowClient().get_model_version(name, version).tags
    found: dict[str, float] = {}
    for key, v in tags.items():
        m = re.fullmatch(r"baseline_(.+)_recall", key)
        method = m.group(1) if m else ("popularity" if key == f"popularity_{metric}" else None)
        if method:
            try:
                found[method] = float(v)
            except ValueError:
                continue
    if not found:
        return None
    best = max(found, key=lambda k: (found[k], k))
    return GateBaseline(best, found[best], metric, None, "recorded on the version")


@dataclass
class PromotionResult:
    promoted: bool
    message: str
    challenger: str
    champion_before: str | None
    champion_after: str | None
    challenger_value: float | None = None
    champion_value: float | None = None
    baseline: GateBaseline | None = None
    margin: float = 0.0
    forced: bool = False


@_translated
def promote(name: str = MLLM, version: str | None = None, metric: str = GATE_METRIC,
            workdir: str | os.PathLike | None = None,
            evaluate: Callable[[str], float] | None = None,
            baseline: GateBaseline | None = None, margin: float = 0.0,
            force: bool = False) -> PromotionResult:
    """The promotion gate. Moves ``@champion`` to the challenger (``version`` or
    ``@challenger``) only when both hold:

    1. its held-out ``metric`` is not worse than the champion's (no champion yet: skipped);
       ``evaluate(model_uri)`` re-measures both on the same data instead of trusting the
       recorded values (runs may have used other splits);
    2. it beats the best baseline by more than ``margin``: ``challenger > best + margin``
       (default margin 0: strictly above). ``baseline`` comes from a report
       (:func:`baseline_from_report`), else from the challenger's recorded tags
       (:func:`recorded_baseline`).

    Otherwise ``@champion`` stays, ``@challenger`` stays, and the result's one-line message
    says why. ``force`` promotes anyway; the version is tagged ``promoted_forced`` with the
    refusal it overrode.

    Raises:
        SerendipError: unknown name/version/alias, unrecorded metric, a bad ``margin``, or no
            baseline at all (pass a report, or ``force``). ServiceError: the tracking server.
    """
    from mlflow import MlflowClient

    setup(workdir)
    margin = check_margin(margin)
    client = MlflowClient()
    challenger = resolve_version(name, version or "@" + CHALLENGER)
    champion = alias_version(name, CHAMPION)
    if champion == challenger:
        return PromotionResult(False, f"{name} v{challenger} is already the champion",
                               challenger, champion, champion)

    def value(v: str) -> float:
        if evaluate is not None:
            return float(evaluate(f"models:/{name}/{v}"))
        return version_metric(name, v, metric)

    ch_val = value(challenger)
    champ_val = value(champion) if champion is not None else None
    base = baseline or recorded_baseline(name, challenger, metric)
    if base is None and not force:
        raise SerendipError(f"{name} v{challenger} has no baseline to beat (no "
                            f"baseline_*_recall / popularity_{metric} recorded)",
                            field="baselines", fix="pass --baselines evaluation/"
                                                   "mllm_offline.json or --reevaluate "
                                                   "(or --force to skip the gate)")
    reasons = []
    stays = f"@champion stays v{champion}" if champion else "no @champion yet"
    if champ_val is not None and ch_val < champ_val:
        reasons.append(f"challenger {metric} {ch_val:.4f} < champion v{champion}'s "
                       f"{champ_val:.4f} (worse than champion)")
    if base is not None:
        ours = base.challenger_value if base.challenger_value is not None else ch_val
        if not ours > base.value + margin:
            reasons.append(f"challenger {base.metric} {ours:.4f} \u2264 best baseline "
                           f"{base.method} {base.value:.4f} + margin {margin:.2f} "
                           f"({base.source})")
    res = dict(challenger=challenger, champion_before=champion, challenger_value=ch_val,
               champion_value=champ_val, baseline=base, margin=margin)
    if reasons and not force:
        return PromotionResult(False, f"refused {name} v{challenger}: " + "; ".join(reasons)
                               + f"; {stays}; use --force to override",
                               champion_after=champion, **res)
    client.set_registered_model_alias(name, CHAMPION, challenger)
    tags = {"promoted_over": champion or "", "gate_margin": f"{margin}"}
    if base is not None:
        tags.update(gate_baseline=base.method, gate_baseline_value=f"{base.value}",
                    gate_baseline_source=base.source)
        if base.challenger_value is not None:
            tags["gate_challenger_value"] = f"{base.challenger_value}"
    if force:
        tags.update(promoted_forced="true",
                    forced_over="; ".join(reasons) if reasons else "gate passed")
    for k, v in tags.items():
        if v:
            client.set_model_version_tag(name, challenger, k, v)
    if reasons:
        msg = (f"FORCED {name} v{challenger} to @champion"
               + (" (the first champion)" if champion is None else f" over v{champion}")
               + " against the gate: " + "; ".join(reasons)
               + " (tagged promoted_forced on the version)")
    elif champion is None:
        msg = f"{name} v{challenger} is the first champion"
    else:
        msg = (f"promoted {name} v{challenger} to @champion: {metric} {ch_val:.4f} >= "
               f"v{champion}'s {champ_val:.4f}")
    if base is not None and not reasons:
        ours = base.challenger_value if base.challenger_value is not None else ch_val
        msg += (f"; {base.metric} {ours:.4f} > best baseline {base.method} {base.value:.4f}"
                f" + margin {margin:.2f}")
    return PromotionResult(True, msg, champion_after=challenger, forced=bool(force), **res)
