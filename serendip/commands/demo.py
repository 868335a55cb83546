"""``serendip demo``: the whole system on the embedded default, then a report."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="./serendip-demo",
                   help="everything the demo makes goes here (default ./serendip-demo)")
    p.add_argument("--size", choices=("small", "default"), default="default",
                   help="small: ~3 minutes (tests); default: the full demo")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from serendip.platform.demo import run_demo

    run_demo(args.workdir, args.size, args.seed)
    return 0
