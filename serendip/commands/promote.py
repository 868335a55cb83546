"""``serendip promote``: the promotion gate. Moves ``@champion`` to the challenger only when its
held-out recall (under the trie, the served decoding) is not worse than the champion's; a
worse challenger is refused with a message (exit 1) and the champion stays."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", required=True, help="work directory (its MLflow store)")
    p.add_argument("--name", default="serendip-mllm", help="registered model name")
    p.add_argument("--version", default=None,
                   help="version to promote (default: the one with alias @challenger)")
    p.add_argument("--metric", default="recall_constrained",
                   help="held-out metric compared, higher is better (default recall_constrained)")
    p.add_argument("--reevaluate", action="store_true",
                   help="re-measure both versions on this workdir's held-out examples instead "
                        "of trusting the values recorded at registration")


def run(args: argparse.Namespace) -> int:
    from serendip.platform import registry

    evaluate = None
    if args.reevaluate:
        if args.name != registry.MLLM:
            from serendip.errors import SerendipError

            raise SerendipError(f"--reevaluate supports {registry.MLLM} only",
                                field="--reevaluate", fix="drop --reevaluate")
        evaluate = _reevaluator(args.workdir, args.metric)
    res = registry.promote(args.name, args.version, metric=args.metric, workdir=args.workdir,
                           evaluate=evaluate)
    print(json.dumps({"promoted": res.promoted, "challenger": res.challenger,
                      "champion_before": res.champion_before,
                      "champion_after": res.champion_after,
                      "challenger_value": res.challenger_value,
                      "champion_value": res.champion_value}, indent=2))
    if res.promoted or res.champion_after == res.challenger:
        print(f"serendip promote: {res.message}")
        return 0
    print(f"serendip promote: {res.message}", file=sys.stderr)
    return 1


def _reevaluator(workdir: str, metric: str):
    from serendip.errors import SerendipError
    from serendip.mllm.train import evaluate_predictor, split
    from serendip.mllm.workdir import load_inputs, rebuild_examples
    from serendip.platform import registry

    inp = load_inputs(workdir)

    def evaluate(uri: str) -> float:
        predictor = registry.load_predictor(uri, workdir)
        predictor.encoder.base_dir = str(inp.workdir)
        examples = rebuild_examples(inp, predictor.prompt_config)
        scores = evaluate_predictor(predictor, split(examples, "test"))
        if metric not in scores:
            raise SerendipError(f"metric {metric!r} is not measured offline", field="--metric",
                                fix=f"use one of {sorted(k for k in scores if k != 'n')}")
        return scores[metric]

    return evaluate
