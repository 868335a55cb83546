"""Write a Triton model repository (``<workdir>/model_repository``) from trained model
directories: the committed ``model_repository/<model>/config.pbtxt`` + ``1/model.py`` templates,
and the weights copied into the version folder, ``<model>/<version>/weights/``.

The version folder is the registry version number of the exported model (``@champion``), so
Triton's default policy (serve the latest version) follows the registry. Each model is
written to a temporary folder and swapped in with a rename, so a running export never leaves
a half-written model behind.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from serendip.data.io import atomic_write_bytes
from serendip.errors import SerendipError

MODELS = ("mllm", "retriever")


def template_dir() -> Path:
    """The committed templates: ``$SERENDIP_MODEL_TEMPLATES`` or ``<repo>/model_repository``."""
    env = os.environ.get("SERENDIP_MODEL_TEMPLATES")
    d = Path(env) if env else Path(__file__).resolve().parents[1] / "model_repository"
    if not (d / "mllm" / "config.pbtxt").exists():
        raise SerendipError(f"no model repository templates at {d}", field="templates",
                            fix="run from a source checkout, or set SERENDIP_MODEL_TEMPLATES "
                                "to a copy of the repository's model_repository/")
    return d


@dataclass
class ExportSource:
    """One model to export: a local model directory and where it came from."""

    model: str                    # mllm | retriever
    path: Path                    # saved ClusterPredictor / Retriever directory
    version: int = 1              # Triton version folder (registry version number)
    origin: str = "local"         # e.g. models:/serendip-mllm@champion (version 3)


def _check_source(src: ExportSource) -> None:
    marker = {"mllm": "serendip.json", "retriever": "config.json"}[src.model]
    if not (Path(src.path) / marker).exists():
        raise SerendipError(f"{src.path} is not a saved {src.model} model (no {marker})",
                            field=src.model, fix="pass the directory written by "
                            + ("`serendip finetune`" if src.model == "mllm"
                               else "`serendip train-retriever`"))
    if src.version < 1:
        raise SerendipError(f"version {src.version}", field="version",
                            fix="Triton versions are positive integers")


def export_model(src: ExportSource, repository: str | os.PathLike,
                 templates: str | os.PathLike | None = None,
                 instances: int | None = None) -> Path:
    """Write ``<repository>/<model>/`` (config, code, weights) atomically; returns it."""
    _check_source(src)
    tpl = Path(templates) if templates else template_dir()
    repo = Path(repository)
    repo.mkdir(parents=True, exist_ok=True)
    final = repo / src.model
    tmp = repo.parent / f".{repo.name}.{src.model}.tmp"   # outside: Triton scans the repo
    shutil.rmtree(tmp, ignore_errors=True)
    version_dir = tmp / str(src.version)
    version_dir.mkdir(parents=True)
    config = (tpl / src.model / "config.pbtxt").read_text()
    if instances:
        config = config.replace("count: 1 kind: KIND_CPU", f"count: {int(instances)} kind: KIND_CPU")
    (tmp / "config.pbtxt").write_text(config)
    shutil.copy2(tpl / src.model / "1" / "model.py", version_dir / "model.py")
    shutil.copytree(src.path, version_dir / "weights",
                    ignore=shutil.ignore_patterns(".*", "__pycache__"))
    atomic_write_bytes(tmp / "export.json", json.dumps(
        {"model": src.model, "version": src.version, "origin": src.origin,
         "source_path": str(Path(src.path).resolve())}, indent=2).encode())
    old = repo.parent / f".{repo.name}.{src.model}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def export_repository(sources: list[ExportSource], repository: str | os.PathLike,
                      templates: str | os.PathLike | None = None,
                      instances: int | None = None) -> Path:
    """Export every source; the repository's README says what recommend is."""
    for src in sources:
        export_model(src, repository, templates, instances)
    readme = Path(repository) / "README.md"
    atomic_write_bytes(readme, (
        b"# Exported Triton model repository\n\nWritten by `serendip export`; "
        b"`serendip serve` (or KServe's `kserve-tritonserver` runtime) serves it.\n"
        b"`recommend` is not a Triton model: it is the KServe transformer in front of Triton "
        b"(Feast lookup, then `retriever`).\n"))
    return Path(repository)


def latest_mllm_dir(workdir: str | os.PathLike) -> Path | None:
    """The most recently written ``<workdir>/mllm/<run>`` model directory, if any."""
    runs = [p.parent for p in Path(workdir, "mllm").glob("*/serendip.json")]
    return max(runs, key=lambda p: (p / "serendip.json").stat().st_mtime) if runs else None


def exported_versions(repository: str | os.PathLike) -> dict[str, dict]:
    """``export.json`` of each exported model (empty when nothing is exported)."""
    out = {}
    for m in MODELS:
        p = Path(repository) / m / "export.json"
        if p.exists():
            out[m] = json.loads(p.read_text())
    return out
