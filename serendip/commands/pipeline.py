"""``serendip pipeline compile|run``: KFP pipelines locally (``kfp.local``) or on a KFP host."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="<compile|run>", required=True)
    c = sub.add_parser("compile", help="write the pipelines' IR YAML")
    c.add_argument("--out", required=True, help="directory for <name>.yaml")
    c.add_argument("names", nargs="*", help="pipelines to compile (default: all)")
    r = sub.add_parser("run", help="run a pipeline with kfp.local, or submit it with --host")
    r.add_argument("name", help="training or scoring")
    r.add_argument("--workdir", default="./serendip-work",
                   help="local runs: work directory (pipeline root, MLflow store, outputs)")
    r.add_argument("--host", default=None, help="KFP API endpoint; submits instead of running")
    r.add_argument("--experiment", default="serendip", help="KFP experiment name (with --host)")
    r.add_argument("--data-uri", default=None,
                   help="directory or object-store URI with items/interactions (default: workdir)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="pipeline parameter override (repeatable)")
    r.add_argument("--log", default=None, metavar="FILE",
                   help="local runs: write the runner's and components' output to FILE and "
                        "print one line per task (default: <workdir>/logs/pipeline-<name>.log)")
    r.add_argument("--verbose", action="store_true",
                   help="local runs: stream everything kfp.local prints instead")


def run(args: argparse.Namespace) -> int:
    from serendip.config import parse_sets
    from serendip.platform.kfp import runner as kfp_adapter

    if args.action == "compile":
        for path in kfp_adapter.compile_all(args.out, args.names or None):
            print(f"wrote {path}")
        return 0
    params = parse_sets(args.overrides)
    if args.host:
        run_id = kfp_adapter.submit(args.name, args.host, args.experiment, args.data_uri, params)
        print(f"submitted {args.name} to {args.host}: run {run_id}")
        return 0
    from pathlib import Path

    log = None if args.verbose else (Path(args.log) if args.log else
                                     kfp_adapter.log_path_for(args.workdir, args.name))
    if log is not None:
        print(f"running {args.name} with kfp.local (full log: {log})")
    from serendip.locks import workdir_lock

    with workdir_lock(args.workdir, f"pipeline-{args.name}", f"pipeline run {args.name}"):
        outputs = kfp_adapter.run_local(args.name, args.workdir, args.data_uri, params,
                                        log_path=log)
    for key, value in outputs.items():
        print(f"{key}: {value}")
    return 0
