"""``serendip evaluate``: offline metrics of a fine-tuned MLLM on the held-out split (match rate
and recall with and without the trie, recall@k, two baselines); ``--ablation`` runs the paper's
Figures 3-5 on the work directory; ``--online-sim`` compares recommenders on the synthetic
platform's ground truth.

A thin wrapper: the offline stage is :func:`serendip.evaluation.offline.evaluate_stage`; the
model spec (registry URI or directory) is resolved by
:func:`serendip.mllm.models.load_predictor`."""

from __future__ import annotations

import argparse
import json

from serendip.commands.synth import _positive


def _seeds(text: str) -> str:
    """Comma-separated integers, checked here so a typo fails before any training."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got "
                                         f"{text!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError("give at least one seed, e.g. --seeds 0,1")
    return text


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--workers must be >= 0, got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", required=True, help="work directory (examples, clusters, mllm/)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--ablation", action="store_true",
                      help="prompt types, frame counts and thumbnail vs frame (paper Figs. 3-5)")
    mode.add_argument("--online-sim", action="store_true",
                      help="online simulation against the ground truth (paper §4)")
    mode.add_argument("--replay", action="store_true",
                      help="replay held-out last transitions of real logs (--data) through "
                           "every arm; with --write-split, first write the training split to "
                           "--workdir (serendip.evaluation.replay)")
    g = p.add_argument_group("replay (--replay; serendip.evaluation.replay)")
    g.add_argument("--data", default=None,
                   help="replay: directory with the full logs (items, interactions); default "
                        "--workdir")
    g.add_argument("--write-split", action="store_true",
                   help="replay: write items and the training interactions to --workdir, then "
                        "run cluster, curate, finetune, score and train-retriever there")
    g.add_argument("--holdout-days", type=float, default=None,
                   help="replay: hold out the last N days (default: each user's last "
                        "transition)")
    g.add_argument("--share", type=float, default=0.2,
                   help="replay: serendipitous share of the blended slate (default 0.2)")
    p.add_argument("--model", default=None,
                   help="models:/serendip-mllm@champion (default when registered), a version "
                        "URI, or a model directory (default otherwise: newest <workdir>/mllm/*)")
    p.add_argument("--k", type=_positive("--k"), default=5, help="recall@k under the trie (default 5)")
    p.add_argument("--max-examples", type=_positive("--max-examples"), default=None,
                   help="cap on held-out examples")
    p.add_argument("--groups", default="prompt,frames,thumbnail",
                   help="ablation groups, comma-separated (prompt, frames, thumbnail)")
    p.add_argument("--steps", type=_positive("--steps"), default=300, help="ablation: steps per variant")
    p.add_argument("--eval-every", type=_positive("--eval-every"), default=50,
                   help="ablation: evaluation cadence")
    p.add_argument("--seeds", default="0", type=_seeds,
                   help="comma-separated seeds (ablation: mean curves; online-sim: replicates)")
    p.add_argument("--contexts", type=_positive("--contexts"), default=400,
                   help="online-sim: replayed contexts per seed (default 400)")
    p.add_argument("--k-items", type=_positive("--k-items"), default=10,
                   help="online-sim: items per recommendation list (default 10)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="ablation: FinetuneConfig override (as for serendip finetune)")
    p.add_argument("--workers", type=_non_negative, default=1,
                   help="ablation: runs trained at once in separate processes, CPU threads "
                        "shared among them (0 = one per core; default 1)")
    p.add_argument("--out", default=None,
                   help="output folder (default <workdir>/evaluation or <workdir>/ablation)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    import os

    threads = os.environ.get("SERENDIP_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    from serendip.locks import workdir_lock

    mode = "online-sim" if args.online_sim else "ablation" if args.ablation else "evaluation"
    mode = "replay" if getattr(args, "replay", False) else mode
    with workdir_lock(args.workdir, mode, "evaluate"):
        if mode == "replay":
            return _replay(args)
        if args.online_sim:
            return _online_sim(args)
        if args.ablation:
            return _ablation(args)
        return _offline(args)


def _curated_level_delta(wd) -> dict:
    """``level``/``delta`` of the work directory's curation.json (read strictly); none for a
    work directory that was never curated, whose config then keeps its own l and δ."""
    from serendip.curation import read_curation

    cur = read_curation(wd, missing_ok=True)
    return {"level": cur.level, "delta": cur.delta} if cur is not None else {}


def _online_sim(args: argparse.Namespace) -> int:
    """Replay contexts on the synthetic ground truth and compare recommenders (paper §4)."""
    from pathlib import Path

    from serendip.evaluation.online_sim import OnlineSimConfig
    from serendip.evaluation.workdir import online_sim, online_sim_markdown

    wd = Path(args.workdir)
    cfg = OnlineSimConfig(n_contexts=args.contexts, k=args.k_items,
                          seeds=tuple(int(s) for s in args.seeds.split(",") if s.strip()),
                          **_curated_level_delta(wd))
    summary = online_sim(wd, cfg, model_dir=args.model, progress=not args.quiet)
    print(online_sim_markdown(summary))
    print(f"\nwrote {wd / 'evaluation' / 'online_sim.json'} and online_sim.png")
    return 0


def _offline(args: argparse.Namespace) -> int:
    from serendip.evaluation.offline import evaluate_stage
    from serendip.mllm.models import load_predictor
    from serendip.platform.tracking import MLflowTracker

    predictor = load_predictor(args.model, args.workdir, registry=not args.no_mlflow)
    tracker = None if args.no_mlflow else MLflowTracker(args.workdir)
    rep = evaluate_stage(args.workdir, predictor, args.out, k=args.k,
                         max_examples=args.max_examples, tracker=tracker,
                         model_name=args.model)
    print(rep["markdown"])
    return 0


def _ablation(args: argparse.Namespace) -> int:
    from pathlib import Path

    from serendip.config import load_config
    from serendip.mllm.ablation import AblationConfig, ablation_stage

    # --set KEY=VALUE sets the shared FinetuneConfig: the ablation's `finetune.KEY`
    cfg = load_config(AblationConfig, None, [f"finetune.{s}" for s in args.set], settings={
        "groups": [g.strip() for g in args.groups.split(",") if g.strip()],
        "steps": args.steps, "eval_every": args.eval_every,
        "seeds": [s.strip() for s in args.seeds.split(",") if s.strip()]})
    out = Path(args.out) if args.out else Path(args.workdir) / "ablation"
    tracker = None
    if not args.no_mlflow:
        from serendip.platform.tracking import MLflowTracker

        tracker = MLflowTracker(args.workdir)
    ablation_stage(args.workdir, out, cfg, progress=not args.quiet, tracker=tracker,
                   workers=args.workers)
    print((out / "table.md").read_text())
    return 0


def _replay(args: argparse.Namespace) -> int:
    """``serendip evaluate --replay``: see serendip.evaluation.replay's module docstring for
    the two-step flow."""
    from pathlib import Path

    from serendip.errors import SerendipError
    from serendip.evaluation.replay import ReplayConfig, replay_stage, write_replay_split

    wd = Path(args.workdir)
    data = Path(args.data) if args.data else wd
    cfg = ReplayConfig(holdout_days=args.holdout_days, k=args.k_items,
                       **_curated_level_delta(wd), serendipitous_share=args.share,
                       seed=int(args.seeds[0]) if isinstance(args.seeds, (list, tuple))
                       else int(str(args.seeds).split(",")[0]))
    if args.write_split:
        if data.resolve() == wd.resolve():
            raise SerendipError("--write-split would overwrite the full logs with the "
                                "training split", field="--workdir",
                                fix="pass the full logs as --data and a new --workdir")
        print(json.dumps(write_replay_split(data, wd, cfg), indent=2))
        return 0
    predictor = None
    if args.model:     # CLI glue: the same model resolution as `serendip evaluate`
        from serendip.mllm.models import load_predictor

        predictor = load_predictor(args.model, wd, registry=not args.no_mlflow)
    summary = replay_stage(wd, data, cfg, predictor=predictor, out_dir=args.out,
                           progress=not args.quiet)
    print(summary["markdown"])
    if summary["heldout_in_training"]:
        print(f"warning: {summary['heldout_in_training']} held-out transitions are in "
              f"{wd}'s interactions: the models saw them (use --write-split)")
    print(f"\nwrote {Path(args.out) if args.out else wd / 'evaluation'}/replay.json and "
          f"replay.md ({summary['n_cases']} cases, {summary['seconds']} s)")
    return 0
