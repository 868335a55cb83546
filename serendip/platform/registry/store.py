"""The MLflow store a run logs to: ``MLFLOW_TRACKING_URI`` when set, else
``sqlite:///<workdir>/mlflow/mlflow.db``; with a sqlite store, artifacts live next to the
database (``<db dir>/artifacts``), never in the current directory's ``./mlruns``. Telemetry is
off."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from serendip.errors import ConfigError
from serendip.platform.registry.errors import translated

URI_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


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


def artifact_root(uri: str) -> str | None:
    """For a sqlite store, artifacts go next to the database file (not ./mlruns)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.parent / "artifacts").resolve().as_uri()
    return None


@translated
def ensure_experiment(name: str, workdir: str | os.PathLike | None = None) -> str:
    import mlflow

    uri = setup(workdir)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = artifact_root(uri)
    return mlflow.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)
