"""``serendip export``: write the Triton model repository (``<workdir>/model_repository``) from
the ``@champion`` registry versions (default when an MLflow store exists) or from local model
directories — configs and Python-backend code from the packaged templates
(``serendip/serving/model_repository/``), weights into the version folders."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", required=True, help="work directory of a pipeline run")
    p.add_argument("--source", choices=("auto", "registry", "local"), default="auto",
                   help="registry: @champion versions; local: --mllm/--retriever or the work "
                        "directory's mllm/<latest run> and retriever/; auto: registry where a "
                        "champion exists, else local (default)")
    p.add_argument("--alias", default="champion", help="registry alias to export")
    p.add_argument("--mllm", default=None, help="local mllm model directory")
    p.add_argument("--retriever", default=None, help="local retriever directory")
    p.add_argument("--out", default=None, help="repository (default <workdir>/model_repository)")
    p.add_argument("--instances", type=int, default=None,
                   help="Triton instances per model (instance_group count; default 1)")


def _local(model: str, args, wd):
    from pathlib import Path

    from serendip.errors import SerendipError
    from serendip.serving.repository import ExportSource, latest_mllm_dir

    given = getattr(args, model)
    path = Path(given) if given else (latest_mllm_dir(wd) if model == "mllm"
                                      else wd / "retriever")
    if path is None or not path.exists():
        raise SerendipError(f"no local {model} model in {wd}", field=model,
                            fix=f"pass --{model} DIR, or train it first")
    return ExportSource(model, path, 1, f"local {path}")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from serendip.errors import SerendipError

    wd = Path(args.workdir)
    if not wd.is_dir():
        raise SerendipError(f"{wd} is not a directory", field="workdir",
                            fix="pass the work directory of a pipeline run")
    out = Path(args.out) if args.out else wd / "model_repository"
    from serendip.locks import workdir_lock
    from serendip.platform.registry import mlflow_errors

    with workdir_lock(wd, "export", "export"), mlflow_errors("export"):
        _export(args, wd, out)
    return 0


def _export(args, wd, out) -> None:
    from serendip.errors import SerendipError
    from serendip.serving.repository import MODELS, export_repository

    sources = []
    for model in MODELS:
        src = None
        explicit = getattr(args, model) is not None
        if args.source != "local" and not explicit:
            from serendip.platform.serving.champions import champion_source, registry_configured

            if args.source == "registry" or registry_configured(wd):
                try:
                    src = champion_source(model, wd, wd / ".export", args.alias)
                except SerendipError:
                    if args.source == "registry":
                        raise
        sources.append(src or _local(model, args, wd))
    export_repository(sources, out, instances=args.instances, snapshot_from=wd)
    for s in sources:
        print(f"{s.model:10s} -> {out / s.model / str(s.version)}  ({s.origin})")
    if (out / "recommend" / "1").exists():
        print(f"recommend  -> {out / 'recommend' / '1'}  (BLS; snapshot of item_serendipity)")
    print(f"exported {out}")
