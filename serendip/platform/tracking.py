"""MLflow implementation of :class:`serendip.tracking.Tracker` (runs, the model registry and
the promotion gate of :mod:`serendip.platform.registry`). A registry URI or directory becomes
a predictor through :func:`serendip.mllm.models.load_predictor`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serendip.platform import registry


class MLflowTracker:
    """Logs to the tracking server of ``workdir`` (``MLFLOW_TRACKING_URI`` or the work
    directory's default store) and registers models as ``serendip-mllm`` @challenger.

    Nothing is touched until the first run starts, so a stage's own input checks come first;
    call :meth:`connect` to check the tracking URI up front (before a long training).

    Raises:
        SerendipError: a tracking URI that cannot be reached or parsed (from :meth:`connect`
            or the first run).
    """

    challenger_alias = registry.CHALLENGER

    def __init__(self, workdir: str | os.PathLike) -> None:
        self.workdir = Path(workdir)

    def connect(self) -> MLflowTracker:
        """Point MLflow at the store now (a bad URI fails here); returns ``self``."""
        registry.setup(self.workdir)
        return self

    @contextmanager
    def start_run(self, experiment: str, run_name: str | None = None,
                  params: dict | None = None) -> Iterator[str]:
        registry.setup(self.workdir)
        with registry.start_run(experiment, self.workdir, run_name=run_name,
                                params=params) as run:
            yield run.info.run_id

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        registry.log_metrics(metrics, step=step)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        registry.log_artifact(path, artifact_path)

    def log_tables(self, tables: dict[str, str | os.PathLike]) -> None:
        registry.log_tables(tables)

    def register_model(self, model_dir: str | os.PathLike, metrics: dict) -> str | None:
        return registry.register_mllm(model_dir, metrics=metrics, workdir=self.workdir)

    def promote(self, version: str) -> tuple[bool, str]:
        res = registry.promote(registry.MLLM, version, workdir=self.workdir)
        return res.promoted, res.message
