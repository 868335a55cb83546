"""``serendip demo``: the whole system on the embedded default (or ``--data DIR``: your own
tables), then a report."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="./serendip-demo",
                   help="everything the demo makes goes here (default ./serendip-demo)")
    p.add_argument("--size", choices=("small", "default"), default="default",
                   help="small: ~3 minutes (tests); default: the full demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, metavar="DIR",
                   help="your own tables (items + interactions, e.g. the --out of `serendip "
                        "import recbole`) instead of the synthetic platform: each user's last "
                        "transition is held out before training and replayed at the end")


def run(args: argparse.Namespace) -> int:
    from serendip.platform.demo import run_demo

    run_demo(args.workdir, args.size, args.seed, data=args.data)
    return 0
