"""Fine-tuning for controlled generation of serendipitous cluster descriptions (paper §2).

One config (:class:`FinetuneConfig`) and one entry point (:func:`finetune`), nanoGPT-plain:
:func:`_setup` checks the inputs, builds or loads the model and encodes the examples once;
then one loop of AdamW steps with a warmup-cosine learning rate, held-out evaluation every
``eval_every`` steps (match rate and recall, with and without the trie) and a resumable
checkpoint every ``save_every`` steps; :func:`_finish` saves the model directory.

The config and result are in :mod:`serendip.mllm.config`, the model that trains (base, LoRA,
train mode) in :mod:`serendip.mllm.trainable`, the resumable checkpoints in
:mod:`serendip.mllm.checkpoints`, the example tables' helpers in :mod:`serendip.mllm.data` and
the held-out evaluation in :mod:`serendip.mllm.evaluation`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from tqdm.auto import tqdm

from serendip.data.io import atomic_write_bytes
from serendip.errors import ConfigError
from serendip.mllm.checkpoints import config_key, resume_state, save_checkpoint
from serendip.mllm.config import EvalCallback, FinetuneConfig, FinetuneResult, to_jsonable
from serendip.mllm.data import (
    IGNORE,
    Encoded,
    Encoder,
    check_examples,
    collate_train,
    example_targets,
)
from serendip.mllm.distributed import setup, teardown, to_device, wrap
from serendip.mllm.evaluation import evaluate_predictor
from serendip.mllm.inference import ClusterPredictor
from serendip.mllm.loading import TINY, quiet_transformers, tokenizer_of
from serendip.mllm.tiny import tokenizer_corpus
from serendip.mllm.trainable import prepare_model, train_mode
from serendip.prompts import PromptConfig
from serendip.transitions import TransitionPrior


def _lr_at(step: int, cfg: FinetuneConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def _loss(model, batch: dict) -> torch.Tensor:
    """Mean next-token cross-entropy over the target tokens (left-padded batch: the targets
    end every row, so only the last ``max target length + 1`` logits are computed)."""
    labels = batch.pop("labels")
    keep = int((labels != IGNORE).sum(1).max()) + 1
    logits = model(**batch, logits_to_keep=keep).logits[:, :-1]
    target = labels[:, labels.shape[1] - keep + 1:]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                             target.reshape(-1), ignore_index=IGNORE)


def _batch_indices(step: int, n: int, bs: int, seed: int) -> list[int]:
    """Batch ``step`` of a seeded permutation per epoch (replayable on resume)."""
    out = []
    pos = step * bs
    while len(out) < bs:
        epoch, offset = divmod(pos, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        take = min(bs - len(out), n - offset)
        out.extend(int(i) for i in perm[offset:offset + take])
        pos += take
    return out


def _over_budget(cfg: FinetuneConfig, cpu_s: float, ctx) -> bool:
    """Whether training has used its CPU budget (``cfg.time_budget_s``); data-parallel
    processes stop together, when any of them is over."""
    over = cfg.time_budget_s > 0 and cpu_s >= cfg.time_budget_s
    if ctx.distributed and cfg.time_budget_s > 0:
        flag = torch.tensor([float(over)], device=ctx.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        over = bool(flag.item())
    return over


@dataclass
class _Run:
    """What the training loop works on, built once by :func:`_setup`."""

    ctx: Any                          # the process group (serendip.mllm.distributed)
    prompt: PromptConfig
    level: int
    cluster_ids: list[str]
    descriptions: list[str]
    test: pa.Table
    out: Path
    work: Path                        # ``.<out>.work``: checkpoints, tokenizer, base snapshot
    model: Any
    processor: Any
    method: str
    base_snapshot: Path | None        # LoRA: the base bundled with the saved adapter
    image_size: int | None
    base_dir: str | None
    encoded: list[Encoded]            # the train split, encoded once
    params: list[torch.nn.Parameter]  # what trains
    opt: torch.optim.Optimizer
    start: int                        # the step to resume at
    history: list[dict] = field(default_factory=list)

    def predictor(self, cfg: FinetuneConfig, prior: TransitionPrior | None = None
                  ) -> ClusterPredictor:
        """The predictor of the model as it stands; with ``prior``, the one saved (weight
        ``cfg.prior_weight``); without, the model alone (the in-training evaluation)."""
        return ClusterPredictor(self.model, self.processor, self.cluster_ids, self.descriptions,
                                self.prompt, self.level, image_size=self.image_size,
                                reasoning_tokens=cfg.reasoning_tokens,
                                batch_size=cfg.eval_batch_size, base_dir=self.base_dir,
                                prior=prior,
                                prior_weight=cfg.prior_weight if prior is not None else 0.0)



def _encode_train(processor, image_size: int | None, base_dir: str | None, train: pa.Table,
                  prompt: PromptConfig, progress: bool) -> list[Encoded]:
    encoder = Encoder(processor, image_size, base_dir)
    prompts = tqdm(train.column("prompt").to_pylist(), desc="encode", disable=not progress,
                   leave=False)
    return [encoder.encode(p, im or [], t) for p, im, t in zip(
        prompts, train.column("images").to_pylist(), example_targets(train, prompt))]


def _setup(examples: pa.Table, clusters: pa.Table, cfg: FinetuneConfig, out_dir,
           prompt_config: PromptConfig | None, items: pa.Table | None, resume: bool,
           base_dir: str | None, progress: bool, device: str) -> _Run:
    """Check the inputs, join the process group, prepare the work folder, build the model,
    encode the train split and the optimizer, and load the checkpoint to resume from."""
    prompt, level, cluster_ids, descriptions, train, test = check_examples(
        examples, clusters, cfg, prompt_config)
    ctx = setup(device)
    if cfg.batch_size < ctx.world:
        raise ConfigError(f"batch_size={cfg.batch_size} is smaller than the {ctx.world} "
                          "processes", field="batch_size",
                          fix=f"use batch_size >= {ctx.world} (it is the global batch)")
    out = Path(out_dir)
    work = out.parent / f".{out.name}.work"
    if not resume and ctx.is_main:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    titles = items.column("title").to_pylist() if items is not None else []
    corpus = tokenizer_corpus(titles + examples.column("prompt").to_pylist(),
                              descriptions + example_targets(examples, prompt))
    model, processor, method, base_snapshot = prepare_model(cfg, prompt, corpus, work, resume,
                                                            ctx)
    image_size = cfg.tiny.image_size if cfg.base_model == TINY else None
    encoded = _encode_train(processor, image_size, base_dir, train, prompt, progress)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = resume_state(work, cfg, model, opt, resume)
    return _Run(ctx, prompt, level, cluster_ids, descriptions, test, out, work, model,
                processor, method, base_snapshot, image_size, base_dir, encoded, params, opt,
                start, history)


def _evaluate(run: _Run, cfg: FinetuneConfig, step: int, train_loss: float, t0: float,
              train_cpu_s: float, on_eval: EvalCallback | None) -> None:
    """One row of the held-out curve (appended to ``run.history``, handed to ``on_eval``)."""
    row = {"step": step, "train_loss": train_loss,
           "elapsed_s": round(time.perf_counter() - t0, 2), "train_cpu_s": round(train_cpu_s, 2)}
    if run.test.num_rows:
        row.update(evaluate_predictor(run.predictor(cfg), run.test, cfg.eval_max_examples))
        train_mode(run.model)
    run.history.append(row)
    if on_eval:
        on_eval(step, row)


def _finish(run: _Run, cfg: FinetuneConfig, t0: float,
            prior: TransitionPrior | None = None) -> FinetuneResult:
    """Rank 0 saves the model directory (safetensors, serendip.json with the prompt manifest,
    history.json); every rank leaves the process group."""
    n_train = sum(p.numel() for p in run.params)
    n_total = sum(p.numel() for p in run.model.parameters())
    final: dict = {}
    if run.ctx.is_main:
        final = {k: v for k, v in run.history[-1].items()
                 if k not in ("elapsed_s", "train_cpu_s")}
        predictor = run.predictor(cfg, prior)
        meta = {"base_model": cfg.base_model, "method": run.method, "config": to_jsonable(cfg),
                "metrics": final, "trainable_params": n_train, "total_params": n_total,
                "world_size": run.ctx.world, "device": run.ctx.device.type}
        run.model.to("cpu")              # saved and served device-independent
        predictor.save(run.out, meta, base_src=run.base_snapshot)
        atomic_write_bytes(run.out / "history.json", json.dumps(run.history, indent=2).encode())
    run.ctx.barrier()
    teardown(run.ctx)
    return FinetuneResult(run.out, final, run.history if run.ctx.is_main else [], n_train,
                          n_total, run.method, round(time.perf_counter() - t0, 2))


def finetune(examples: pa.Table, clusters: pa.Table, cfg: FinetuneConfig,
             out_dir: str | os.PathLike, prompt_config: PromptConfig | None = None,
             items: pa.Table | None = None, on_eval: EvalCallback | None = None,
             resume: bool = True, base_dir: str | None = None,
             progress: bool = True, device: str = "auto",
             prior: TransitionPrior | None = None) -> FinetuneResult:
    """Train on the ``train`` split, evaluate on ``test``, save a model dir to ``out_dir``.

    ``prompt_config`` (or ``cfg.prompt``) is the config the examples were built with
    (``CurationResult.prompt``, curation.json's ``prompt`` manifest); it is stored with the
    model as is, so inference builds prompts and samples frames the same way. ``items``
    (optional) adds titles to the tiny tokenizer's corpus. ``on_eval(step, metrics)`` is
    called at every evaluation (the CLI logs it to MLflow). With ``resume``, training
    continues from the latest checkpoint under ``out_dir/work``. Paper §2 ("MLLM
    Fine-Tuning"), the prompt types of §3.1.

    Args:
        examples: the curated examples (split ``train`` / ``test``). clusters: the tree's
            clusters; the model answers with their descriptions at the examples' level.
        progress, device: run-time flags, not hyper-parameters: a progress bar; ``auto``
            (CUDA when a GPU is visible) | ``cpu`` | ``cuda``. Data parallelism is the
            caller's (:func:`serendip.mllm.stage.finetune_stage`, ``nproc``).
        prior: the training contexts' transition prior (curation's
            ``transition_prior.json``); the saved model applies it with weight
            ``cfg.prior_weight`` (logit adjustment, :mod:`serendip.transitions`). The held-out
            metrics during training are the model's alone (the paper's recall).

    Returns:
        FinetuneResult: held-out ``metrics`` (match rate and recall in [0, 1], with and without
        the trie), the eval ``history``, method, parameter counts, seconds.

    Raises:
        ConfigError: a setting out of range, no prompt config, a prompt or strategy that
            disagrees with the examples, a global batch smaller than the process count, or a
            checkpoint under ``out_dir`` from another config (``resume``).
        SerendipError: examples without a ``train`` split.
    """
    cfg.check()
    quiet_transformers()
    t0 = time.perf_counter()
    run = _setup(examples, clusters, cfg, out_dir, prompt_config, items, resume, base_dir,
                 progress, device)
    ctx, model, opt, encoded = run.ctx, run.model, run.opt, run.encoded
    pad_id = tokenizer_of(run.processor).pad_token_id
    # DDP averages gradients across ranks; every rank takes its slice of the same global batch.
    # find_unused: LLaVA-style models read a middle vision layer, so the last one gets no grad.
    step_model = wrap(model, ctx, find_unused=True)
    amp = cfg.autocast_dtype(ctx.device)
    where = (f", {ctx.world} processes" if ctx.distributed else "") + \
        (", bf16" if amp is not None else "")
    bar = tqdm(range(run.start, cfg.steps), desc=f"finetune ({run.method}{where})",
               disable=not progress or not ctx.is_main, initial=run.start, total=cfg.steps)
    loss_sum, loss_n = 0.0, 0
    train_cpu = run.history[-1].get("train_cpu_s", 0.0) if run.history else 0.0
    done = run.start
    for step in bar:
        c0 = time.process_time()
        every = _batch_indices(step, len(encoded), cfg.batch_size, cfg.seed)
        idx = ctx.shard(every)
        batch = to_device(collate_train([encoded[i] for i in idx], pad_id), ctx.device)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        with torch.autocast(ctx.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss = _loss(step_model, batch)
        loss_value = float(loss.detach())
        if ctx.distributed:
            # DDP averages rank gradients; weighting each rank's token mean by its share of the
            # global batch's target tokens makes that average the one-process gradient exactly.
            tokens = [len(encoded[i].target_ids) for i in every]
            loss = loss * (ctx.world * sum(len(encoded[i].target_ids) for i in idx) / sum(tokens))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(run.params, cfg.grad_clip)
        opt.step()
        loss_sum, loss_n = loss_sum + loss_value, loss_n + 1
        bar.set_postfix(loss=f"{loss_value:.3f}")
        done = step + 1
        train_cpu += time.process_time() - c0
        over = _over_budget(cfg, train_cpu, ctx)
        if (done % cfg.eval_every == 0 or done == cfg.steps or over) and ctx.is_main:
            _evaluate(run, cfg, done, loss_sum / max(loss_n, 1), t0, train_cpu, on_eval)
            loss_sum, loss_n = 0.0, 0
        if (done % cfg.save_every == 0 or done == cfg.steps or over) and ctx.is_main:
            save_checkpoint(run.work, done, model, opt,
                            {"step": done, "history": run.history, "config": config_key(cfg)},
                            cfg.keep_checkpoints)
        if done % cfg.eval_every == 0 or done % cfg.save_every == 0 or over:
            ctx.barrier()
        if over:
            break
    bar.close()
    if ctx.is_main and (not run.history or run.history[-1]["step"] != done):
        _evaluate(run, cfg, done, loss_sum / max(loss_n, 1), t0, train_cpu, on_eval)
    return _finish(run, cfg, t0, prior)
