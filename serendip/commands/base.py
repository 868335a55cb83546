"""``serendip base build --out DIR``: assemble the pretrained base VLM offline (EfficientNet-Lite0
vision tower + SmolLM2-135M-Instruct + a seeded projector) from the installed
registry packages. Idempotent: a directory that already holds the build of the installed
package versions is left as it is. Fine-tune it with ``serendip finetune --set base_model=DIR``."""

from __future__ import annotations

import argparse
import json


def _layers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--text-layers must be an integer, got {text!r}") \
            from None
    if not 1 <= value <= 30:
        raise argparse.ArgumentTypeError(f"--text-layers must be in 1..30, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="<action>", required=True)
    b = sub.add_parser("build", help="assemble the pretrained VLM into a directory (~560 MB)",
                       description=__doc__)
    b.add_argument("--out", required=True,
                   help="output directory (created; rebuilt only when the package versions "
                        "or settings changed)")
    b.add_argument("--seed", type=int, default=0, help="projector initialisation seed")
    b.add_argument("--text-layers", type=_layers, default=None,
                   help="keep only the first N of SmolLM2's 30 layers (for quick tests)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import os

    threads = os.environ.get("SERENDIP_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    from serendip.mllm.base import BaseConfig, build_base

    res = build_base(args.out, BaseConfig(text_layers=args.text_layers, seed=args.seed),
                     progress=not args.quiet)
    print(json.dumps({"path": str(res.path), "built": res.built, "seconds": res.seconds,
                      "size_mb": round(res.size_bytes / 2**20, 1), "params": res.params,
                      "finetune": f"serendip finetune --workdir WORKDIR "
                                  f"--set base_model={res.path}"}, indent=2))
    return 0
