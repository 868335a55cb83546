"""``serendip score``: batch-score the popular corpus with the @champion MLLM, write
``item_serendipity.parquet`` (incremental, resumable) and push it to Feast."""

from __future__ import annotations

import argparse
import json

from serendip.commands.synth import _positive

DEFAULT_MODEL = "models:/serendip-mllm@champion"


def _coverage(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"coverage must be a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"coverage must be in (0, 1], got {value}")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"max error rate must be a number, got {text!r}"
                                         ) from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"max error rate must be in [0, 1], got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", required=True,
                   help="work directory (items, clusters, item_clusters, cluster_tree/)")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"registered model URI or a saved model directory (default {DEFAULT_MODEL})")
    p.add_argument("--coverage", type=_coverage, default=0.8,
                   help="share of impressions the scored items must cover, in (0, 1]")
    p.add_argument("--batch-size", type=_positive("--batch-size"), default=64,
                   help="items per decoding batch")
    p.add_argument("--chunk-size", type=_positive("--chunk-size"), default=256,
                   help="items per committed chunk (what a crash can lose at most)")
    p.add_argument("--k", type=_positive("--k"), default=3, help="clusters per item")
    p.add_argument("--max-error-rate", type=_rate, default=0.01,
                   help="fail the run when more than this share of the selected items cannot "
                        "be scored (they are listed in scoring_errors.parquet with the reason; "
                        "a rerun retries them), in [0, 1] (default 0.01)")
    p.add_argument("--no-assign", action="store_true",
                   help="do not place items missing from item_clusters in the tree")
    p.add_argument("--no-feast", action="store_true",
                   help="skip Feast apply + materialize after scoring")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import sys

    from serendip.locks import workdir_lock
    from serendip.mllm.models import load_predictor
    from serendip.scoring import ScoringConfig, score_items

    cfg = ScoringConfig(coverage=args.coverage, k=args.k, batch_size=args.batch_size,
                        chunk_size=args.chunk_size, assign_new=not args.no_assign,
                        max_error_rate=args.max_error_rate)
    cfg.check()
    # scoring AND the Feast sync: what is materialized is what this run wrote
    with workdir_lock(args.workdir, "score", "score"):
        predictor = load_predictor(args.model, args.workdir)   # URI or directory
        result = score_items(args.workdir, predictor, cfg, progress=not args.quiet)
        summary = dict(result.stats)
        if not args.no_feast:
            from serendip.platform import features

            summary["feast"] = features.sync(args.workdir)
    print(json.dumps(summary, indent=2, default=str))
    if summary.get("failed"):
        print(f"serendip score: {summary['failed']} item(s) could not be scored "
              f"({summary['error_rate']:.2%}, allowed {cfg.max_error_rate:.2%}); reasons in "
              f"{summary['errors_table']}; a rerun retries them", file=sys.stderr)
    return 0
