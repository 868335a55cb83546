"""Which fine-tuned MLLM a command means: the one "model reference → :class:`ClusterPredictor`"
path used by ``serendip evaluate``, ``score``, ``promote``, the KFP scoring components and the
demo.

A reference is a loaded predictor (returned as is), a model directory written by
:func:`serendip.mllm.train.finetune`, a registry URI (``models:/serendip-mllm@champion``,
``models:/serendip-mllm/3``, ``runs:/<run>/mllm``; downloaded by
:func:`serendip.platform.registry.download_model`, imported only for such a URI so the core
needs no MLflow), or nothing: the registry's ``@champion`` when the work directory has a
registry, else the work directory's latest model (:func:`serendip.mllm.stage.newest_model_dir`,
the one rule for "the latest model").
"""

from __future__ import annotations

import os
from pathlib import Path

from serendip.errors import SerendipError
from serendip.mllm.inference import ClusterPredictor
from serendip.mllm.stage import newest_model_dir
from serendip.tracking import has_registry

CHAMPION_URI = "models:/serendip-mllm@champion"


def load_predictor(model: ClusterPredictor | str | os.PathLike | None = None,
                   workdir: str | os.PathLike | None = None, *, registry: bool = True,
                   batch_size: int | None = None, device: str = "auto",
                   decoding: str = "auto") -> ClusterPredictor:
    """The predictor ``model`` refers to (module docstring); media paths resolve against
    ``workdir`` when it is given.

    Args:
        model: a ClusterPredictor, a model directory, a ``models:/`` / ``runs:/`` URI, or None.
        workdir: the work directory (its registry and ``mllm/`` models for ``model=None``).
        registry: with ``model=None``, whether to ask the registry for ``@champion`` first
            (``--no-mlflow``: the latest local model only).
        batch_size, device, decoding: as :meth:`ClusterPredictor.load`.

    Returns:
        ClusterPredictor; from a registered version its ``model_version`` is
        ``<name>/v<version>``.

    Raises:
        SerendipError: ``model`` is neither a URI nor a directory, or ``model=None`` and the
            work directory holds no model (field ``--model``); an unknown registered name,
            alias or version. ConfigError: a directory that is not a saved model.
        ServiceError: the tracking server cannot be reached.
    """
    if isinstance(model, ClusterPredictor):
        return model
    kw = dict(batch_size=batch_size, device=device, decoding=decoding,
              base_dir=str(workdir) if workdir is not None else None)
    if model is None or str(model) == "":
        if registry and workdir is not None and has_registry(workdir):
            from serendip.platform import registry as mlflow_registry

            mlflow_registry.setup(workdir)
            if mlflow_registry.alias_version(mlflow_registry.MLLM,
                                             mlflow_registry.CHAMPION) is not None:
                return load_predictor(CHAMPION_URI, workdir, batch_size=batch_size,
                                      device=device, decoding=decoding)
        if workdir is None:
            raise SerendipError("no model given", field="--model",
                                fix=f"pass {CHAMPION_URI}, a model directory or a work directory")
        return ClusterPredictor.load(newest_model_dir(workdir), **kw)
    ref = str(model)
    if ref.startswith(("models:/", "runs:/")):
        from serendip.platform.registry import download_model

        local, name, version = download_model(ref, workdir)
        predictor = ClusterPredictor.load(local, model_version=(f"{name}/v{version}" if name
                                                               else None), **kw)
        predictor.model_dir = local
        return predictor
    if not Path(ref).is_dir():
        raise SerendipError(f"model {ref!r} is neither a registry URI nor a directory",
                            field="--model",
                            fix=f"pass {CHAMPION_URI} or <workdir>/mllm/<run>")
    return ClusterPredictor.load(ref, **kw)
