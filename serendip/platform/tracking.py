"""MLflow implementation of :class:`serendip.tracking.Tracker` (runs, the model registry and
the promotion gate of :mod:`serendip.platform.registry`), plus :func:`load_model`, the
"registry URI or directory → predictor" resolution the CLI and the KFP components share."""

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


def load_model(spec: str | None, workdir: str | os.PathLike, use_mlflow: bool = True):
    """A ClusterPredictor from a ``models:/`` URI, a model directory, or (``spec`` empty) the
    registry's champion, falling back to the newest ``<workdir>/mllm/*`` model.

    Raises:
        SerendipError: no model found (field ``--model``), or the registry refused the URI.
    """
    from serendip.mllm.inference import ClusterPredictor
    from serendip.mllm.stage import newest_model_dir

    if spec and not spec.startswith("models:/"):
        return ClusterPredictor.load(spec, base_dir=str(workdir))
    if use_mlflow:
        if spec:
            predictor = registry.load_predictor(spec, workdir)
        else:
            registry.setup(workdir)
            if registry.alias_version(registry.MLLM, registry.CHAMPION) is None:
                return ClusterPredictor.load(newest_model_dir(workdir), base_dir=str(workdir))
            predictor = registry.load_predictor(workdir=workdir)
        predictor.encoder.base_dir = str(Path(workdir))
        return predictor
    return ClusterPredictor.load(newest_model_dir(workdir), base_dir=str(workdir))
