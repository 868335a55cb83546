"""The fine-tuning stage on a work directory (paper §2, "MLLM Fine-Tuning"; prompts §3.1):
read the curated examples and the cluster tree, fine-tune the MLLM
(:func:`serendip.mllm.train.finetune`), evaluate on the held-out split every few steps, and hand
the run to a tracker (MLflow: log + register as ``serendip-mllm`` @challenger).

:func:`finetune_stage` is the one entry called alike by ``serendip finetune``, the KFP
``finetune`` component and the demo; :func:`serendip.config.load_config` turns settings into
its :class:`~serendip.mllm.config.FinetuneConfig`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from contextlib import nullcontext
from pathlib import Path

from serendip.errors import SerendipError
from serendip.mllm.checkpoints import SCORING_ONLY
from serendip.tracking import NullTracker, Tracker, is_tracking


def run_name_for(cfg, prompt) -> str:
    """``<strategy>-<method>-<8 hex digits of the config>``: the same config, the same folder
    (so a re-run resumes from its checkpoints). ``prior_weight`` only re-ranks answers, so it
    is left out: a re-run with another weight re-saves the trained model at once."""
    from serendip.config import to_dict

    settings = {k: v for k, v in to_dict(cfg).items() if k not in SCORING_ONLY}
    digest = hashlib.sha256(json.dumps([settings, to_dict(prompt)], sort_keys=True)
                            .encode()).hexdigest()[:8]
    return f"{prompt.strategy}-{cfg.resolved_method()}-{digest}"


def newest_model_dir(workdir: str | os.PathLike) -> Path:
    """The most recently written model directory ``<workdir>/mllm/*`` (one with
    ``serendip.json``).

    Raises:
        SerendipError: no fine-tuned model under the work directory (field ``--model``).
    """
    from serendip.mllm.workdir import latest_model_dir

    found = latest_model_dir(workdir)
    if found is None:
        raise SerendipError(f"no fine-tuned model under {workdir}/mllm", field="--model",
                            fix=f"run `serendip finetune --workdir {workdir}` or pass --model")
    return found


def finetune_stage(workdir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                   cfg=None, *, tree_dir: str | os.PathLike | None = None,
                   examples_dir: str | os.PathLike | None = None, run_name: str | None = None,
                   resume: bool = True, progress: bool = True, tracker: Tracker | None = None,
                   promote: bool = False, device: str = "auto", nproc: int = 0) -> dict:
    """Fine-tune on a work directory (or KFP's separate ``tree_dir`` / ``examples_dir``
    artifacts) and return a JSON-able summary: ``model_dir``, ``metrics`` (held-out match rate
    and recall, paper §3.1), ``baselines``, and with a tracker ``registered_version``.

    Args:
        workdir: directory with items (and, unless given separately, examples.parquet,
            curation.json, clusters.parquet, item_clusters.parquet).
        out_dir: the model directory; default ``<workdir>/mllm/<run_name>`` (locked while
            training and registering, so a version never mixes two runs).
        cfg: a FinetuneConfig (default: ``FinetuneConfig()``). ``cfg.prompt`` ``None``
            takes the prompt curation chose. The caller's config is not changed.
        tracker: where the run is logged and the model registered (default: nowhere).
        promote: run the tracker's promotion gate right after registering.
        progress, device, nproc: run-time flags, not hyper-parameters (they are not part of
            the config, its hash or the run name): progress bars; ``auto`` (CUDA when a GPU
            is visible) | ``cpu`` | ``cuda``; data-parallel processes, >= 0 (0: one per
            visible GPU, 1 on the CPU).

    With ``nproc`` > 1 (or 0 on a node with several GPUs) the work runs in that many
    torchrun workers (data parallel, see serendip.mllm.distributed); rank 0 tracks.

    Raises:
        SchemaError: a missing or malformed input table. ConfigError: a bad setting.
        SerendipError: the run folder is locked by another fine-tune, or a worker failed.
    """
    import dataclasses

    from serendip.config import to_dict
    from serendip.mllm.config import FinetuneConfig
    from serendip.mllm.distributed import check_device, in_launched_worker, launch, resolve_nproc

    cfg = FinetuneConfig() if cfg is None else dataclasses.replace(cfg)
    tracker = tracker if tracker is not None else NullTracker()
    check_device(device)
    nproc = resolve_nproc(nproc, device)
    if nproc > 1 and not in_launched_worker():
        kind = type(tracker)
        spec = {"workdir": str(workdir), "settings": to_dict(cfg),
                "out_dir": out_dir, "tree_dir": tree_dir, "examples_dir": examples_dir,
                "run_name": run_name, "promote": promote, "resume": resume,
                "progress": progress, "device": device, "nproc": nproc,
                "tracker": f"{kind.__module__}:{kind.__qualname__}" if is_tracking(tracker)
                else None}
        return launch("serendip.mllm.stage:stage_worker", spec, nproc)
    if int(os.environ.get("RANK", "0")) != 0:        # a torchrun worker other than rank 0
        tracker, promote = NullTracker(), False
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
    tables = training_tables(workdir, tree_dir, examples_dir)
    with lock:
        return _finetune_locked(inp, cfg, prompt, examples, name, out, tracker, promote,
                                resume, progress, tables, device)


def _finetune_locked(inp, cfg, prompt, examples, name, out, tracker: Tracker, promote,
                     resume, progress, tables, device) -> dict:
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
                        progress=progress, device=device, prior=inp.prior)

    if not is_tracking(tracker):
        result = train()
    else:
        params = {**to_dict(cfg), "prompt": to_dict(prompt), "level": inp.level,
                  "delta": inp.delta, "train_examples": _count(examples, "train"),
                  "test_examples": _count(examples, "test")}
        with tracker.start_run("serendip-mllm", run_name=name, params=params) as run_id:
            tracker.log_tables(tables)
            result = train(on_eval=lambda step, m: tracker.log_metrics(m, step=step))
            flat_base = {f"baseline_{k}_recall": v["recall"] for k, v in base_scores.items()}
            tracker.log_metrics(flat_base)
            plot = plot_history(result.history, out / "curves.png", base_scores,
                                title=f"serendip-mllm {name}")
            tracker.log_artifact(plot, "plots")
            tracker.log_artifact(out / "history.json", "history")
            version = tracker.register_model(out, {**result.metrics, **flat_base})
            summary.update(mlflow_run_id=run_id, registered_version=version,
                           alias=tracker.challenger_alias)
        if promote:
            promoted, message = tracker.promote(version)
            summary.update(promoted=promoted, promotion=message)
    best = max((b["recall"] for b in base_scores.values()), default=0.0)
    summary.update(metrics=result.metrics, baselines=base_scores, method=result.method,
                   trainable_params=result.trainable_params, total_params=result.total_params,
                   seconds=result.seconds,
                   lift_over_best_baseline=(result.metrics.get("recall_constrained", 0) / best
                                            if best else None))
    return summary


def training_tables(workdir, tree_dir=None, examples_dir=None) -> dict:
    """The tables a fine-tune reads (logged as dataset inputs): wherever they live (one work
    directory, or KFP's separate data / tree / examples artifacts)."""
    from serendip.data.io import find_table, has_table

    dirs = {"examples": examples_dir or workdir, "clusters": tree_dir or workdir,
            "item_clusters": tree_dir or workdir, "items": workdir}
    return {name: find_table(d, name) for name, d in dirs.items() if has_table(d, name)}


def stage_worker(spec: dict) -> dict:
    """torchrun entry: rebuild the config (and the tracker, by class) from plain data and run
    this rank's share."""
    from serendip.config import load_config
    from serendip.mllm.config import FinetuneConfig

    cfg = load_config(FinetuneConfig, settings=spec.pop("settings"))
    tracker_path = spec.pop("tracker", None)
    tracker = None
    if tracker_path and int(os.environ.get("RANK", "0")) == 0:
        module, cls = tracker_path.split(":")
        tracker = getattr(importlib.import_module(module), cls)(spec["workdir"])
    paths = {k: (Path(v) if v else None) for k, v in spec.items()
             if k in ("out_dir", "tree_dir", "examples_dir")}
    rest = {k: v for k, v in spec.items() if k not in paths and k != "workdir"}
    return finetune_stage(spec["workdir"], cfg=cfg, tracker=tracker, **paths, **rest)


def _count(examples, split: str) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(pc.equal(examples.column("split"), split)).as_py() or 0)
