"""Write a Triton model repository (``<workdir>/model_repository``) from trained model
directories: the ``<model>/config.pbtxt`` + ``<model>/1/model.py`` templates shipped as package
data (``serendip/serving/model_repository/``), and the weights copied into the version folder,
``<model>/<version>/weights/``.

The version folder is the registry version number of the exported model (``@champion``), so
Triton's default policy (serve the latest version) follows the registry. Each model is
written to a temporary folder and swapped in with a rename, so a running export never leaves
a half-written model behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from serendip.data.io import atomic_write_bytes
from serendip.errors import SerendipError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

MODELS = ("mllm", "retriever")


def template_dir() -> Traversable:
    """The Triton templates shipped with the package (``serendip/serving/model_repository``,
    package data: found wherever the package is installed, whatever the working directory).

    Raises:
        SerendipError: the installed package lacks its templates (a broken install)."""
    d = resources.files("serendip.serving") / "model_repository"
    if not (d / "mllm" / "config.pbtxt").is_file():
        raise SerendipError(f"no model repository templates at {d}", field="templates",
                            fix="reinstall serendip (its package data is missing)")
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


def _swap_in(model: str, version: int, repository: Path, templates: Traversable,
             fill: Callable[[Path], None], meta: dict, instances: int | None = None) -> Path:
    """Write ``<repository>/<model>/`` in a temporary folder (outside the repository: Triton
    scans it) and swap it in with renames."""
    repository.mkdir(parents=True, exist_ok=True)
    final = repository / model
    tmp = repository.parent / f".{repository.name}.{model}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    version_dir = tmp / str(version)
    version_dir.mkdir(parents=True)
    config = (templates / model / "config.pbtxt").read_text()
    if instances:
        config = config.replace("count: 1 kind: KIND_CPU", f"count: {int(instances)} kind: KIND_CPU")
    (tmp / "config.pbtxt").write_text(config)
    (version_dir / "model.py").write_bytes((templates / model / "1" / "model.py").read_bytes())
    fill(version_dir / "weights")
    atomic_write_bytes(tmp / "export.json", json.dumps(meta, indent=2).encode())
    old = repository.parent / f".{repository.name}.{model}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def export_model(src: ExportSource, repository: str | os.PathLike,
                 templates: str | os.PathLike | None = None,
                 instances: int | None = None) -> Path:
    """Write ``<repository>/<model>/`` (config, code, weights) atomically; returns it."""
    _check_source(src)

    def fill(weights: Path) -> None:
        shutil.copytree(src.path, weights, ignore=shutil.ignore_patterns(".*", "__pycache__"))

    meta = {"model": src.model, "version": src.version, "origin": src.origin,
            "source_path": str(Path(src.path).resolve())}
    return _swap_in(src.model, src.version, Path(repository),
                    Path(templates) if templates else template_dir(), fill, meta, instances)


SNAPSHOT_TABLES = ("items", "item_serendipity", "clusters", "item_clusters")


def export_recommend_snapshot(workdir: str | os.PathLike, repository: str | os.PathLike,
                              templates: str | os.PathLike | None = None,
                              cache_ttl_s: float = 300.0) -> Path | None:
    """``<repository>/recommend/1/weights``: the tables the BLS ``recommend`` model reads (a
    snapshot of item_serendipity instead of Feast, which cannot live in Triton's numpy<2 venv).
    Returns ``None`` when the work directory has not been scored yet."""
    from serendip.data.io import atomic_write_parquet, find_table, has_table, read_table, table_path
    from serendip.data.media import media_root

    wd = Path(workdir)
    if not has_table(wd, "item_serendipity"):
        return None

    def fill(weights: Path) -> None:
        weights.mkdir(parents=True)
        for name in SNAPSHOT_TABLES:   # parquet or CSV in the work dir; parquet in the snapshot
            if not has_table(wd, name):
                continue
            src = find_table(wd, name)
            if src.suffix == ".parquet" and src.is_file():
                shutil.copy2(src, weights / src.name)
            else:
                atomic_write_parquet(read_table(wd, name), table_path(weights, name))
        if (wd / "curation.json").exists():
            shutil.copy2(wd / "curation.json", weights / "curation.json")
        import pyarrow.parquet as pq

        n = pq.ParquetFile(weights / table_path(wd, "item_serendipity").name).metadata.num_rows
        atomic_write_bytes(weights / "snapshot.json", json.dumps(
            {"media_base": str(media_root(wd).resolve()), "scored_items": n,
             "cache_ttl_s": cache_ttl_s}).encode())

    meta = {"model": "recommend", "version": 1, "origin": f"snapshot of {wd.resolve()}",
            "source_path": str(wd.resolve())}
    return _swap_in("recommend", 1, Path(repository),
                    Path(templates) if templates else template_dir(), fill, meta)


def export_repository(sources: list[ExportSource], repository: str | os.PathLike,
                      templates: str | os.PathLike | None = None,
                      instances: int | None = None,
                      snapshot_from: str | os.PathLike | None = None) -> Path:
    """Export every source (and, from a scored work directory, the BLS ``recommend``)."""
    for src in sources:
        export_model(src, repository, templates, instances)
    if snapshot_from is not None:
        export_recommend_snapshot(snapshot_from, repository, templates)
    readme = Path(repository) / "README.md"
    atomic_write_bytes(readme, (
        b"# Exported Triton model repository\n\nWritten by `serendip export`; "
        b"`serendip serve` (or KServe's `kserve-tritonserver` runtime) serves it.\n"
        b"`mllm` and `retriever` are the trained models. The production `recommend` is the "
        b"KServe transformer in front of Triton (Feast lookup, then `retriever`); "
        b"`recommend/` here, when present, is the all-Triton BLS variant reading a snapshot.\n"))
    return Path(repository)


def latest_mllm_dir(workdir: str | os.PathLike) -> Path | None:
    """The latest ``<workdir>/mllm/<run>`` model directory, if any
    (:func:`serendip.mllm.workdir.latest_model_dir`)."""
    from serendip.mllm.workdir import latest_model_dir

    return latest_model_dir(workdir)


def exported_versions(repository: str | os.PathLike) -> dict[str, dict]:
    """``export.json`` of each exported model (empty when nothing is exported)."""
    out = {}
    for m in (*MODELS, "recommend"):
        p = Path(repository) / m / "export.json"
        if p.exists():
            out[m] = json.loads(p.read_text())
    return out
