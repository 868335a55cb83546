"""``serendip finetune``: fine-tune the MLLM on the curated examples, evaluate on the held-out
split every few steps, log the run to MLflow and register the model as ``serendip-mllm``
(@challenger). ``serendip promote`` then decides whether it becomes @champion.

A thin wrapper: the stage is :func:`serendip.mllm.stage.finetune_stage` (shared with the KFP
component and the demo); MLflow comes in as :class:`serendip.platform.tracking.MLflowTracker`."""

from __future__ import annotations

import argparse
import json
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", required=True,
                   help="work directory with examples.parquet, clusters.parquet, curation.json")
    p.add_argument("--config", default=None,
                   help="YAML file with FinetuneConfig fields (`serendip config --list finetune`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a FinetuneConfig field (repeatable), e.g. --set steps=500 "
                        "--set prompt.strategy=video --set tiny.text_hidden=192 "
                        "(`serendip config --list finetune` lists them all)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: CUDA when a GPU is visible (a run-time flag: not part of the "
                        "config or the run name)")
    p.add_argument("--nproc", type=int, default=0, metavar="N",
                   help="data-parallel torchrun processes, >= 0 (default 0: one per visible "
                        "GPU, 1 on the CPU)")
    p.add_argument("--run-name", default=None,
                   help="output folder <workdir>/mllm/<run-name>; re-running the same name "
                        "resumes from its last checkpoint (default: derived from the config)")
    p.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    p.add_argument("--no-register", action="store_true",
                   help="do not log to MLflow or register the model")
    p.add_argument("--promote", action="store_true",
                   help="run the promotion gate right after registering")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    threads = os.environ.get("SERENDIP_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    from serendip.config import load_config
    from serendip.mllm.config import FinetuneConfig
    from serendip.mllm.stage import finetune_stage

    cfg = load_config(FinetuneConfig, args.config, args.set)
    tracker = None
    if not args.no_register:
        from serendip.platform.tracking import MLflowTracker

        tracker = MLflowTracker(args.workdir).connect()   # a bad URI fails before training
    summary = finetune_stage(args.workdir, None, cfg, run_name=args.run_name, tracker=tracker,
                             promote=args.promote, resume=not args.no_resume,
                             progress=not args.quiet, device=args.device, nproc=args.nproc)
    print(json.dumps(summary, indent=2, default=str))
    return 0

