"""``serendip train-retriever``: train the sequence retriever on the work directory's sessions,
save it to ``<workdir>/retriever`` and register it as ``serendip-retriever`` (@challenger, then
the promotion gate on held-out NDCG@10 within the true next cluster)."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", required=True,
                   help="work directory with interactions and item_clusters (parquet or CSV)")
    p.add_argument("--config", default=None, help="YAML file with RetrieverConfig fields "
                                                     "(`serendip config --list train-retriever`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a RetrieverConfig field, e.g. --set epochs=10")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-register", action="store_true",
                   help="do not log/register the model in MLflow")
    p.add_argument("--no-promote", action="store_true",
                   help="register as @challenger only; do not run the promotion gate")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from serendip.config import load_config
    from serendip.data.io import find_table, has_table
    from serendip.locks import workdir_lock
    from serendip.retriever import RetrieverConfig, retriever_stage

    wd = Path(args.workdir)
    cfg = load_config(RetrieverConfig, args.config, args.set)  # checked before any data is read
    if not args.no_register:
        from serendip.platform import registry

        registry.setup(wd)                    # a bad tracking URI fails before training
    # <workdir>/retriever is shared: the lock spans training AND registration, so a registered
    # version never pairs one run's weights with another run's metrics (issue 12, case 9)
    with workdir_lock(wd, "retriever", "train-retriever"):
        result = retriever_stage(wd, wd, wd, cfg, progress=not args.quiet)
        out = result.out_dir
        summary = {k: v for k, v in result.metrics.items()
                   if k not in ("train_loss", "eval") and not k.startswith("valid_")}
        summary["out"] = str(out)
        summary["model_version"] = result.retriever.model_version
        if not args.no_register:
            from serendip.platform.retriever_registry import register_and_promote

            tables = {n: find_table(wd, n) for n in ("interactions", "item_clusters")
                      if has_table(wd, n)}
            summary["registry"] = register_and_promote(out, result.metrics, cfg, wd,
                                                       promote=not args.no_promote,
                                                       tables=tables)
    print(json.dumps(summary, indent=2))
    return 0
