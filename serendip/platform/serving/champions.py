"""Resolve the ``@champion`` versions of ``serendip-mllm`` / ``serendip-retriever`` in the MLflow
registry to local model directories, for ``serendip export``.

Both are logged as MLflow *models from code* whose artifact is the saved model directory
(safetensors + JSON, nothing pickled); we download the version's artifacts and find that
directory inside, by its marker file — so the export does not depend on artifact names.
"""

from __future__ import annotations

import os
from pathlib import Path

from serendip.errors import SerendipError
from serendip.model_repository import ExportSource

REGISTERED = {"mllm": "serendip-mllm", "retriever": "serendip-retriever"}
MARKERS = {"mllm": "serendip.json", "retriever": "model.safetensors"}


def registry_configured(workdir: str | os.PathLike) -> bool:
    return bool(os.environ.get("MLFLOW_TRACKING_URI")) or \
        (Path(workdir) / "mlflow" / "mlflow.db").exists()


def champion_source(model: str, workdir: str | os.PathLike, dest: str | os.PathLike,
                    alias: str = "champion") -> ExportSource:
    """Download ``models:/<name>@<alias>`` under ``dest``; an :class:`ExportSource` whose
    Triton version is the registry version number."""
    from serendip.platform import registry

    registry.setup(workdir)
    import mlflow

    name = REGISTERED[model]
    version = registry.resolve_version(name, "@" + alias)
    target = Path(dest) / f"{model}-v{version}"
    if not target.exists():
        tmp = Path(dest) / f".{model}-v{version}.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                            dst_path=str(tmp))
        os.replace(tmp, target)
    found = sorted(p.parent for p in target.rglob(MARKERS[model]))
    if model == "retriever":
        found = [p for p in found if (p / "config.json").exists()]
    if not found:
        raise SerendipError(f"models:/{name}/{version} holds no saved {model} directory",
                            field=model, fix=f"register {model} with the serendip commands")
    return ExportSource(model, found[0], int(version), f"models:/{name}@{alias} (v{version})")
