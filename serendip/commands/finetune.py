"""``serendip finetune``: fine-tune the MLLM on the curated examples, evaluate on the held-out
split every few steps, log the run to MLflow and register the model as ``serendip-mllm``
(@challenger). ``serendip promote`` then decides whether it becomes @champion.

:func:`finetune_stage` is the entry point shared by the CLI and the KFP component."""

from __future__ import annotations

import argparse
import json
import os
from contextlib import nullcontext
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", required=True,
                   help="work directory with examples.parquet, clusters.parquet, curation.json")
    p.add_argument("--config", default=None, help="YAML file with FinetuneConfig fields")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a FinetuneConfig field (repeatable), e.g. --set steps=500 "
                        "--set prompt.strategy=video --set tiny.text_hidden=192; "
                        "--set nproc=4 trains data-parallel in 4 torchrun processes "
                        "(default: one per visible GPU)")
    p.add_argument("--run-name", default=None,
                   help="output folder <workdir>/mllm/<run-name>; re-running the same name "
                        "resumes from its last checkpoint (default: derived from the config)")
    p.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    p.add_argument("--no-register", action="store_true",
                   help="do not log to MLflow or register the model")
    p.add_argument("--promote", action="store_true",
                   help="run the promotion gate right after registering")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def nested(overrides: dict) -> dict:
    """``{"tiny.text_hidden": 192}`` → ``{"tiny": {"text_hidden": 192}}``."""
    out: dict = {}
    for key, value in overrides.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def finetune_config(path: str | None = None, sets: list[str] | None = None,
                    settings: dict | None = None):
    """FinetuneConfig from defaults < YAML < ``settings`` < ``--set`` (dotted keys reach nested
    configs: ``prompt.strategy``, ``tiny.text_hidden``)."""
    import yaml

    from serendip.config import from_dict, load_config, parse_overrides
    from serendip.errors import ConfigError
    from serendip.mllm.train import FinetuneConfig
    from serendip.prompts import PromptConfig

    if path and not Path(path).exists():
        raise ConfigError(f"config file {path} does not exist", field="--config",
                          fix="pass an existing YAML file")
    data = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
    for source in (settings or {}, parse_overrides(sets)):
        for key, value in nested(source).items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
    if isinstance(data.get("prompt"), dict):
        data["prompt"] = from_dict(PromptConfig, data["prompt"])
    cfg = load_config(FinetuneConfig, None, data)
    cfg.check()
    return cfg


def run_name_for(cfg, prompt) -> str:
    import hashlib

    from serendip.config import to_dict

    digest = hashlib.sha256(json.dumps([to_dict(cfg), to_dict(prompt)], sort_keys=True)
                            .encode()).hexdigest()[:8]
    return f"{prompt.strategy}-{cfg.resolved_method()}-{digest}"


def finetune_stage(workdir: str | os.PathLike, cfg, out_dir: str | os.PathLike | None = None,
                   tree_dir: str | os.PathLike | None = None,
                   examples_dir: str | os.PathLike | None = None, run_name: str | None = None,
                   register: bool = True, promote: bool = False, resume: bool = True,
                   progress: bool = True) -> dict:
    """Fine-tune on a work directory (or KFP's separate artifacts), log + register; returns a
    JSON-able summary (model dir, metrics, baselines, registered version).

    With ``cfg.nproc`` > 1 (or 0 on a node with several GPUs) the work runs in that many
    torchrun workers (data parallel, see serendip.mllm.distributed); rank 0 registers."""
    from serendip.config import to_dict
    from serendip.mllm.distributed import in_launched_worker, launch, resolve_nproc

    nproc = resolve_nproc(cfg.nproc, cfg.device)
    if nproc > 1 and not in_launched_worker():
        spec = {"workdir": str(workdir), "settings": {**to_dict(cfg), "nproc": nproc},
                "out_dir": out_dir, "tree_dir": tree_dir, "examples_dir": examples_dir,
                "run_name": run_name, "register": register, "promote": promote,
                "resume": resume, "progress": progress}
        return launch("serendip.commands.finetune:stage_worker", spec, nproc)
    if int(os.environ.get("RANK", "0")) != 0:        # a torchrun worker other than rank 0
        register = promote = False
    if register:
        from serendip.platform import registry

        registry.setup(workdir)                      # a bad tracking URI fails before training
    from serendip.mllm.workdir import load_inputs, rebuild_examples

    inp = load_inputs(workdir, tree_dir, examples_dir)
    prompt = cfg.prompt or inp.prompt
    examples = rebuild_examples(inp, prompt)
    cfg.prompt = None
    name = run_name or run_name_for(cfg, prompt)
    out = Path(out_dir) if out_dir else inp.workdir / "mllm" / name
    lock = nullcontext()
    if out_dir is None and int(os.environ.get("RANK", "0")) == 0:
        # mllm/<name> is shared by every run with this name (and config): the lock spans
        # training AND registration, so a version never mixes two runs (issue 12, case 9)
        from serendip.locks import workdir_lock

        lock = workdir_lock(inp.workdir, f"mllm-{name}", "finetune",
                            fix="wait for it to finish, or pass another --run-name")
    tables = _training_tables(workdir, tree_dir, examples_dir)
    with lock:
        return _finetune_locked(inp, cfg, prompt, examples, name, out, register, promote,
                                resume, progress, tables)


def _finetune_locked(inp, cfg, prompt, examples, name, out, register, promote, resume,
                     progress, tables) -> dict:
    from serendip.config import to_dict
    from serendip.mllm.evaluation import baselines, plot_history
    from serendip.mllm.train import finetune

    summary: dict = {"run_name": name, "model_dir": str(out), "strategy": prompt.strategy,
                     "n_frames": prompt.n_frames, "use_thumbnail": prompt.use_thumbnail}
    has_test = _count(examples, "test") > 0
    base_scores = (baselines(examples, inp.item_clusters, inp.clusters, inp.level, inp.delta)
                   if has_test else {})

    def train(on_eval=None):
        return finetune(examples, inp.clusters, cfg, out, prompt_config=prompt, items=inp.items,
                        on_eval=on_eval, resume=resume, base_dir=str(inp.workdir),
                        progress=progress)

    if not register:
        result = train()
    else:
        from serendip.platform import registry

        params = {**to_dict(cfg), "prompt": to_dict(prompt), "level": inp.level,
                  "delta": inp.delta, "train_examples": _count(examples, "train"),
                  "test_examples": _count(examples, "test")}
        with registry.start_run("serendip-mllm", inp.workdir, run_name=name,
                                params=params) as mlrun:
            registry.log_tables(tables)
            result = train(on_eval=lambda step, m: registry.log_metrics(m, step=step))
            flat_base = {f"baseline_{k}_recall": v["recall"] for k, v in base_scores.items()}
            registry.log_metrics(flat_base)
            plot = plot_history(result.history, out / "curves.png", base_scores,
                                title=f"serendip-mllm {name}")
            registry.log_artifact(plot, "plots")
            registry.log_artifact(out / "history.json", "history")
            version = registry.register_mllm(out, metrics={**result.metrics, **flat_base},
                                             workdir=inp.workdir)
            summary.update(mlflow_run_id=mlrun.info.run_id, registered_version=version,
                           alias=registry.CHALLENGER)
        if promote:
            res = registry.promote(registry.MLLM, version, workdir=inp.workdir)
            summary.update(promoted=res.promoted, promotion=res.message)
    best = max((b["recall"] for b in base_scores.values()), default=0.0)
    summary.update(metrics=result.metrics, baselines=base_scores, method=result.method,
                   trainable_params=result.trainable_params, total_params=result.total_params,
                   seconds=result.seconds,
                   lift_over_best_baseline=(result.metrics.get("recall_constrained", 0) / best
                                            if best else None))
    return summary


def _training_tables(workdir, tree_dir=None, examples_dir=None) -> dict:
    """The tables a fine-tune reads (logged as MLflow dataset inputs): wherever they live
    (one work directory, or KFP's separate data / tree / examples artifacts)."""
    from serendip.data.io import find_table, has_table

    dirs = {"examples": examples_dir or workdir, "clusters": tree_dir or workdir,
            "item_clusters": tree_dir or workdir, "items": workdir}
    return {name: find_table(d, name) for name, d in dirs.items() if has_table(d, name)}


def stage_worker(spec: dict) -> dict:
    """torchrun entry: rebuild the config from plain data and run this rank's share."""
    cfg = finetune_config(settings=spec.pop("settings"))
    paths = {k: (Path(v) if v else None) for k, v in spec.items()
             if k in ("out_dir", "tree_dir", "examples_dir")}
    rest = {k: v for k, v in spec.items() if k not in paths and k != "workdir"}
    return finetune_stage(spec["workdir"], cfg, **paths, **rest)


def run(args: argparse.Namespace) -> int:
    threads = os.environ.get("SERENDIP_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    cfg = finetune_config(args.config, args.set)
    summary = finetune_stage(args.workdir, cfg, run_name=args.run_name,
                             register=not args.no_register, promote=args.promote,
                             resume=not args.no_resume, progress=not args.quiet)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _count(examples, split: str) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.equal(examples.column("split"), split)).as_py() or 0)
