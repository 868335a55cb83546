"""The tracker a stage logs to: an interface, so the core library imports no platform SDK.

A stage (``serendip.mllm.stage.finetune_stage``, ``serendip.evaluation.offline.evaluate_stage``)
takes ``tracker=`` as a keyword-only argument and calls only the methods below. ``None`` (the
default) means :class:`NullTracker`: nothing is logged or registered. The MLflow implementation
is :class:`serendip.platform.tracking.MLflowTracker`; the CLI and the KFP components build it
and pass it in.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol, runtime_checkable


@runtime_checkable
class Tracker(Protocol):
    """What a stage may ask of an experiment tracker / model registry."""

    #: the alias a newly registered version gets (``None`` when untracked)
    challenger_alias: str | None

    def start_run(self, experiment: str, run_name: str | None = None,
                  params: dict | None = None) -> AbstractContextManager[str | None]:
        """A run in ``experiment``; the context yields the run id (``None`` when untracked)."""

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        """Numeric entries of ``metrics`` to the active run (at ``step`` for curves)."""

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """A file or folder to the active run."""

    def log_tables(self, tables: dict[str, str | os.PathLike]) -> None:
        """The input tables (name → path) as dataset inputs of the active run."""

    def register_model(self, model_dir: str | os.PathLike, metrics: dict) -> str | None:
        """Register a saved MLLM directory; returns its version (``None`` when untracked)."""

    def promote(self, version: str) -> tuple[bool, str]:
        """Run the promotion gate on ``version``: (promoted, one-line reason)."""


class NullTracker:
    """Logs nothing and registers nothing (the default of every stage)."""

    challenger_alias: str | None = None

    def start_run(self, experiment: str, run_name: str | None = None,
                  params: dict | None = None) -> AbstractContextManager[str | None]:
        return nullcontext(None)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        return None

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        return None

    def log_tables(self, tables: dict[str, str | os.PathLike]) -> None:
        return None

    def register_model(self, model_dir: str | os.PathLike, metrics: dict) -> str | None:
        return None

    def promote(self, version: str) -> tuple[bool, str]:
        return False, "not tracked: nothing to promote"


def is_tracking(tracker: Tracker | None) -> bool:
    """True when ``tracker`` logs somewhere (not ``None`` and not a :class:`NullTracker`)."""
    return tracker is not None and not isinstance(tracker, NullTracker)


def has_registry(workdir: str | os.PathLike) -> bool:
    """Whether a model registry is configured for ``workdir``: a tracking URI is set
    (``MLFLOW_TRACKING_URI``), or the work directory has its local MLflow store
    (``mlflow/mlflow.db``). A file check: no platform SDK is imported."""
    from pathlib import Path

    return bool(os.environ.get("MLFLOW_TRACKING_URI")) or \
        (Path(workdir) / "mlflow" / "mlflow.db").exists()
