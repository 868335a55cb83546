"""``serendip synth``: write the synthetic platform to a directory."""

from __future__ import annotations

import argparse
import json


def _positive(kind: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be an integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{kind} must be >= 1, got {value}")
        return value
    return parse


def _branching(text: str) -> tuple[int, int, int, int]:
    try:
        parts = tuple(int(x) for x in text.split("/"))
    except ValueError:
        parts = ()
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"branching must look like 4/3/4/2, got {text!r}")
    return parts  # type: ignore[return-value]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory (tables, truth/)")
    p.add_argument("--items", type=_positive("--items"), default=2000)
    p.add_argument("--users", type=_positive("--users"), default=500)
    p.add_argument("--interactions", type=_positive("--interactions"), default=None,
                   help="number of (context, next) interactions (default: 40 per user)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--branching", type=_branching, default=(4, 3, 4, 2),
                   help="latent taxonomy branching per level, e.g. 4/3/4/2")


def run(args: argparse.Namespace) -> int:
    from serendip.data.synth import SynthConfig, write_synth

    cfg = SynthConfig(items=args.items, users=args.users,
                      interactions=args.interactions or 40 * args.users,
                      seed=args.seed, branching=args.branching)
    summary = write_synth(cfg, args.out)
    print(json.dumps(summary, indent=2))
    return 0
