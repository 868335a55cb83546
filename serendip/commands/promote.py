"""``serendip promote``: the promotion gate (issue 15). Moves ``@champion`` to the challenger
only when (1) its held-out metric (recall under the trie, the served decoding) is not worse
than the champion's **and** (2) it beats the best baseline by more than ``--margin`` (default
0: strictly above). The baselines come from ``--baselines`` (a report of ``serendip evaluate``
or :func:`serendip.evaluation.baselines.baselines_stage`), from ``--reevaluate`` (the
challenger and the baselines measured now on this work directory's held-out transitions),
else from those recorded on the version, together with the cluster-choice baselines
(transition statistics, random sibling, retriever-ranked sibling) on the curated test split
when the work directory has the logs. Otherwise one line says why (exit 1) and both aliases
stay; ``--force`` promotes anyway and is tagged on the version (``promoted_forced``).
Bad input (unknown version, bad ``--margin``, unreadable ``--baselines``) is exit 2."""

from __future__ import annotations

import argparse
import json
import sys


def _margin(text: str) -> float:
    """``--margin`` checked at parse time (exit 2, one line)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--margin must be a number in [0, 1], got "
                                         f"{text!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"--margin must be a number in [0, 1], got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", required=True, help="work directory (its MLflow store)")
    p.add_argument("--name", default="serendip-mllm", help="registered model name")
    p.add_argument("--version", default=None,
                   help="version to promote (default: the one with alias @challenger)")
    p.add_argument("--metric", default=None,
                   help="held-out metric compared, higher is better (default "
                        "recall_constrained; ndcg_at_10 for serendip-retriever)")
    p.add_argument("--reevaluate", action="store_true",
                   help="re-measure both versions, and the challenger against the baselines "
                        "on every serendipitous pair of the held-out contexts, on this "
                        "workdir instead of trusting the values recorded at registration")
    p.add_argument("--baselines", default=None, metavar="JSON",
                   help="baselines report to beat (evaluation/mllm_offline.json or a "
                        "baselines_stage JSON); default: recorded on the version and the "
                        "cluster-choice baselines of --workdir")
    p.add_argument("--margin", type=_margin, default=0.0,
                   help="lead over the best baseline the challenger needs (default 0: "
                        "strictly above)")
    p.add_argument("--force", action="store_true",
                   help="promote even when the gate refuses (tagged promoted_forced on the "
                        "version and said in the output)")


def run(args: argparse.Namespace) -> int:
    from serendip.errors import SerendipError
    from serendip.platform import registry
    from serendip.platform.retriever_registry import GATE_METRIC as RETRIEVER_METRIC
    from serendip.platform.retriever_registry import RETRIEVER

    metric = args.metric or (RETRIEVER_METRIC if args.name == RETRIEVER
                             else registry.GATE_METRIC)
    evaluate, baseline = None, None
    registry.setup(args.workdir)
    if args.reevaluate:
        if args.name != registry.MLLM:
            raise SerendipError(f"--reevaluate supports {registry.MLLM} only",
                                field="--reevaluate", fix="drop --reevaluate")
        evaluate = _reevaluator(args.workdir, metric)
    challenger = registry.resolve_version(args.name, args.version or "@" + registry.CHALLENGER)
    if args.baselines:
        baseline = registry.baseline_from_report(_read_report(args.baselines), challenger,
                                                 source=args.baselines)
    elif args.reevaluate:
        baseline = _reevaluated_baseline(args.workdir, args.name, challenger)
    elif args.name == registry.MLLM:
        baseline = _best_of(registry.recorded_baseline(args.name, challenger, metric),
                            _workdir_baseline(args.workdir))
    res = registry.promote(args.name, challenger, metric=metric, workdir=args.workdir,
                           evaluate=evaluate, baseline=baseline, margin=args.margin,
                           force=args.force)
    b = res.baseline
    print(json.dumps({"promoted": res.promoted, "forced": res.forced,
                      "challenger": res.challenger,
                      "champion_before": res.champion_before,
                      "champion_after": res.champion_after,
                      "challenger_value": res.challenger_value,
                      "champion_value": res.champion_value,
                      "baseline": None if b is None else {
                          "method": b.method, "value": b.value, "metric": b.metric,
                          "challenger_value": b.challenger_value, "source": b.source},
                      "margin": res.margin}, indent=2))
    if res.promoted or res.champion_after == res.challenger:
        print(f"serendip promote: {res.message}")
        return 0
    print(f"serendip promote: {res.message}", file=sys.stderr)
    return 1


def _best_of(*baselines):
    have = [b for b in baselines if b is not None]
    return max(have, key=lambda b: b.value) if have else None


def _read_report(path: str) -> dict:
    from pathlib import Path

    from serendip.errors import SerendipError

    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise SerendipError(f"{p} does not exist", field="--baselines",
                            fix="pass the JSON written by serendip evaluate "
                                "(<workdir>/evaluation/mllm_offline.json)") from None
    except (ValueError, OSError) as e:
        raise SerendipError(f"{p} is not a JSON report: {str(e).splitlines()[0][:120]}",
                            field="--baselines",
                            fix="pass the JSON written by serendip evaluate") from None


def _workdir_baseline(workdir: str):
    """The best cluster-choice baseline (transition statistics, random sibling,
    retriever-ranked sibling; training logs only) on the curated test split — the examples the
    recorded ``recall_constrained`` was measured on. None when the work directory lacks the
    logs or the curation (e.g. a bare MLflow store).

    Raises:
        ConfigError: a curation.json lacking a setting (:func:`serendip.curation.read_curation`).
    """
    from pathlib import Path

    from serendip.errors import SerendipError
    from serendip.platform.registry import GateBaseline

    wd = Path(workdir)
    if not (wd / "curation.json").exists() or not (wd / "curated_pairs.parquet").exists():
        return None
    from serendip.curation import read_curation
    from serendip.evaluation.baselines import baselines_stage

    read_curation(wd)   # a malformed curation.json is refused, not a gate without baseline
    try:
        rep = baselines_stage(wd, n_boot=1)
    except SerendipError:
        return None
    sets = [cs for cs in rep["case_sets"] if "curated" in str(cs.get("cases", ""))]
    if not sets:
        return None
    cs = sets[0]
    best = cs["best_baseline"]
    return GateBaseline(best, float(cs["methods"][best]["recall"]["value"]), "recall",
                        None, f"{wd}: {cs['cases']}, {cs['n_cases']} cases")


def _reevaluated_baseline(workdir: str, name: str, challenger: str):
    """The challenger and every baseline on every serendipitous pair of the held-out contexts
    (baselines_stage with the challenger ranking each context's candidates)."""
    from serendip.evaluation.baselines import baselines_stage
    from serendip.mllm.models import load_predictor
    from serendip.platform import registry

    predictor = load_predictor(f"models:/{name}/{challenger}", workdir)
    return registry.baseline_from_report(baselines_stage(workdir, predictor=predictor,
                                                         n_boot=1),
                                         challenger, source="--reevaluate")


def _reevaluator(workdir: str, metric: str):
    from serendip.errors import SerendipError
    from serendip.mllm.data import split
    from serendip.mllm.evaluation import evaluate_predictor
    from serendip.mllm.models import load_predictor
    from serendip.mllm.workdir import load_inputs, rebuild_examples

    inp = load_inputs(workdir)

    def evaluate(uri: str) -> float:
        predictor = load_predictor(uri, inp.workdir)
        examples = rebuild_examples(inp, predictor.prompt_config)
        scores = evaluate_predictor(predictor, split(examples, "test"))
        if metric not in scores:
            raise SerendipError(f"metric {metric!r} is not measured offline", field="--metric",
                                fix=f"use one of {sorted(k for k in scores if k != 'n')}")
        return scores[metric]

    return evaluate
