"""Resolve the ``@champion`` versions of ``serendip-mllm`` / ``serendip-retriever`` in the MLflow
registry to local model directories, for ``serendip export``.

Both are logged as MLflow *models from code* whose artifact is the saved model directory
(safetensors + JSON, nothing pickled); we download the version's artifacts and find that
directory inside, by its marker file — so the export does not depend on artifact names.
"""

from __future__ import annotations

import os

from serendip.serving.repository import ExportSource

REGISTERED = {"mllm": "serendip-mllm", "retriever": "serendip-retriever"}
MARKERS = {"mllm": ("serendip.json",), "retriever": ("model.safetensors", "config.json")}


def registry_configured(workdir: str | os.PathLike) -> bool:
    from serendip.tracking import has_registry

    return has_registry(workdir)


def champion_source(model: str, workdir: str | os.PathLike, dest: str | os.PathLike,
                    alias: str = "champion") -> ExportSource:
    """Download ``models:/<name>@<alias>`` under ``dest``
    (:func:`serendip.platform.registry.download_model`); an :class:`ExportSource` whose Triton
    version is the registry version number."""
    from serendip.platform import registry

    name = REGISTERED[model]
    found, _, version = registry.download_model(f"models:/{name}@{alias}", workdir,
                                                markers=MARKERS[model], dest=dest)
    return ExportSource(model, found, int(version), f"models:/{name}@{alias} (v{version})")
