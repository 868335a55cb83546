"""``serendip evaluate``: offline metrics of a fine-tuned MLLM on the held-out split (match rate
and recall with and without the trie, recall@k, two baselines); ``--ablation`` runs the paper's
Figures 3-5 on the work directory; ``--online-sim`` compares recommenders on the synthetic
platform's ground truth."""

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
            from serendip.evaluation.replay import replay_command

            return replay_command(args)
        if args.online_sim:
            return _online_sim(args)
        if args.ablation:
            return _ablation(args)
        return _offline(args)


def _online_sim(args: argparse.Namespace) -> int:
    """Replay contexts on the synthetic ground truth and compare recommenders (paper §4)."""
    import json
    from pathlib import Path

    from serendip.evaluation.online_sim import OnlineSimConfig
    from serendip.evaluation.workdir import online_sim, online_sim_markdown

    wd = Path(args.workdir)
    level, delta = 3, 1
    if (wd / "curation.json").exists():
        cur = json.loads((wd / "curation.json").read_text())
        level, delta = int(cur.get("level", 3)), int(cur.get("delta", 1))
    cfg = OnlineSimConfig(n_contexts=args.contexts, k=args.k_items,
                          seeds=tuple(int(s) for s in args.seeds.split(",") if s.strip()),
                          level=level, delta=delta)
    summary = online_sim(wd, cfg, model_dir=args.model, progress=not args.quiet)
    print(online_sim_markdown(summary))
    print(f"\nwrote {wd / 'evaluation' / 'online_sim.json'} and online_sim.png")
    return 0


def _newest_model_dir(workdir):
    from pathlib import Path

    from serendip.errors import SerendipError

    dirs = sorted((p for p in (Path(workdir) / "mllm").glob("*") if (p / "serendip.json").exists()),
                  key=lambda p: p.stat().st_mtime)
    if not dirs:
        raise SerendipError(f"no fine-tuned model under {workdir}/mllm", field="--model",
                            fix=f"run `serendip finetune --workdir {workdir}` or pass --model")
    return dirs[-1]


def load_model(spec: str | None, workdir, use_mlflow: bool = True):
    """A ClusterPredictor from a models:/ URI, a directory, or the registry's champion."""
    from pathlib import Path

    from serendip.mllm.inference import ClusterPredictor

    if spec and not spec.startswith("models:/"):
        return ClusterPredictor.load(spec, base_dir=str(workdir))
    if use_mlflow:
        from serendip.platform import registry

        if spec:
            predictor = registry.load_predictor(spec, workdir)
        else:
            registry.setup(workdir)
            if registry.alias_version(registry.MLLM, registry.CHAMPION) is None:
                return ClusterPredictor.load(_newest_model_dir(workdir), base_dir=str(workdir))
            predictor = registry.load_predictor(workdir=workdir)
        predictor.encoder.base_dir = str(Path(workdir))
        return predictor
    return ClusterPredictor.load(_newest_model_dir(workdir), base_dir=str(workdir))


def evaluate_stage(workdir, model: str | None = None, k: int = 5,
                   max_examples: int | None = None, out_dir=None, tree_dir=None,
                   examples_dir=None, use_mlflow: bool = True) -> dict:
    """Offline report of a model on the held-out split (+ baselines); writes
    ``mllm_offline.json``/``.md`` to ``out_dir`` (default ``<workdir>/evaluation``) and logs
    an MLflow run. Shared by the CLI and the KFP component."""
    from pathlib import Path

    from serendip.data.io import atomic_write_bytes
    from serendip.evaluation.baselines import baselines_stage
    from serendip.mllm.evaluation import offline_report, report_markdown
    from serendip.mllm.workdir import load_inputs, rebuild_examples

    inp = load_inputs(workdir, tree_dir, examples_dir)
    predictor = load_model(model, inp.workdir, use_mlflow=use_mlflow)
    examples = rebuild_examples(inp, predictor.prompt_config)
    rep = offline_report(predictor, examples, inp.item_clusters, inp.clusters, inp.delta,
                         k=k, max_examples=max_examples, truth_dir=inp.workdir)
    # The baselines a platform team tries first (issue 15), on all serendipitous pairs of
    # held-out context items: the promotion gate reads them from here (``choice_baselines``).
    choice = baselines_stage(inp.workdir, predictor, tree_dir=tree_dir,
                             examples_dir=examples_dir)
    choice_md = choice.pop("markdown")
    rep["choice_baselines"] = choice
    out = Path(out_dir) if out_dir else inp.workdir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    md = report_markdown(rep) + "\n\n" + choice_md
    atomic_write_bytes(out / "mllm_offline.json", json.dumps(rep, indent=2).encode())
    atomic_write_bytes(out / "mllm_offline.md", (md + "\n").encode())
    if use_mlflow:
        from serendip.platform import registry

        with registry.start_run("serendip-evaluate", inp.workdir, run_name="offline",
                                params={"model": model or "champion",
                                        "model_version": predictor.model_version, "k": k}):
            registry.log_metrics({k_: v for k_, v in rep.items() if isinstance(v, (int, float))})
            registry.log_artifact(out / "mllm_offline.md")
    rep["markdown"] = md
    return rep


def _offline(args: argparse.Namespace) -> int:
    rep = evaluate_stage(args.workdir, args.model, args.k, args.max_examples, args.out,
                         use_mlflow=not args.no_mlflow)
    print(rep["markdown"])
    return 0


def _ablation(args: argparse.Namespace) -> int:
    from pathlib import Path

    from serendip.commands.finetune import finetune_config
    from serendip.mllm.ablation import AblationConfig, run_ablation
    from serendip.mllm.workdir import load_inputs, rebuild_examples

    inp = load_inputs(args.workdir)
    ft = finetune_config(None, args.set)
    cfg = AblationConfig(groups=tuple(g.strip() for g in args.groups.split(",") if g.strip()),
                         steps=args.steps, eval_every=args.eval_every,
                         seeds=tuple(int(s) for s in args.seeds.split(",") if s.strip()),
                         workers=args.workers, finetune=ft)
    out = Path(args.out) if args.out else inp.workdir / "ablation"

    def build(prompt):
        return rebuild_examples(inp, prompt)

    def go(on_variant=None):
        return run_ablation(build, inp.clusters, cfg, out, items=inp.items,
                            on_variant=on_variant, progress=not args.quiet,
                            base_dir=str(inp.workdir))

    if args.no_mlflow:
        payload = go()
    else:
        from serendip.config import to_dict
        from serendip.platform import registry

        with registry.start_run("serendip-ablation", inp.workdir, run_name="ablation",
                                params=to_dict(cfg)):
            payload = go()
            for name, res in payload["results"].items():
                for row in res["history"]:
                    registry.log_metrics({f"{name}.{k}": v for k, v in row.items()
                                          if k in ("recall", "match_rate", "recall_constrained")},
                                         step=row["step"])
            registry.log_artifact(out / "table.md")
            for png in payload["plots"].values():
                registry.log_artifact(png, "plots")
    print((out / "table.md").read_text())
    return 0
