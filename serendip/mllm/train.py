"""Fine-tuning for controlled generation of serendipitous cluster descriptions (paper §2).

One config (:class:`FinetuneConfig`) and one entry point (:func:`finetune`), nanoGPT-plain:
:func:`_setup` checks the inputs, builds or loads the model and encodes the examples once;
then one loop of AdamW steps with a warmup-cosine learning rate, held-out evaluation every
``eval_every`` steps (match rate and recall, with and without the trie) and a resumable
checkpoint every ``save_every`` steps; :func:`_finish` saves the model directory.

Which weights train (``method``):

* ``full`` — every weight. The default for the tiny model: it starts from random weights, and
  LoRA on a random base is unstable (measured: 0.55 unconstrained / 0.83 constrained recall
  after 90 s, against 1.0 for full training in ~47 s) because the frozen random layers carry
  no features for the low-rank updates to recombine.
* ``lora`` — peft LoRA on the language model's attention projections (``lora_targets``;
  the vision tower is never adapted), with ``lm_head`` and the vision-language projector
  trained in full (``modules_to_save``: without them a model whose output layer never saw the
  cluster vocabulary collapses). The default for pretrained bases and previously fine-tuned
  serendip models.

Defaults for the tiny model, measured on the synthetic platform (2000 items, 4/3/4/2 tree, CoT
with 4 frames, ~380 curated examples whose labels name the true bridge topic only ~55% of the
time): batch 32 (the paper's) and lr 1e-3 reach ~0.4 held-out recall in 300 steps while
batch 8 or 16 stay near 0.2 after 500-800 steps — the visual cue (a small motif in some
frames) needs many images per update to emerge from noisy labels; lr 2e-3/3e-3 stalled or
memorised. Weight decay 0.1 stabilises across seeds.

Checkpoints hold only what trains (safetensors) + the optimizer state (safetensors + JSON, no
pickle) + the loop state; batches come from a seeded permutation per epoch, so a resumed run
replays the same batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from tqdm.auto import tqdm

from serendip.data.io import atomic_write_bytes
from serendip.errors import ConfigError, SerendipError
from serendip.mllm.data import IGNORE, Encoded, Encoder, collate_train
from serendip.mllm.distributed import setup, teardown, to_device, wrap
from serendip.mllm.inference import META, ClusterPredictor, load_model_dir, read_meta
from serendip.mllm.loading import TINY, check_local, load_base, quiet_transformers, tokenizer_of
from serendip.mllm.tiny import TinyVLMConfig, build_model, build_processor, tokenizer_corpus, train_tokenizer
from serendip.prompts import PromptConfig, build_target

METHODS = ("auto", "full", "lora")
PRECISIONS = ("auto", "fp32", "bf16")
PROJECTORS = ("multi_modal_projector", "connector", "merger", "mm_projector")
VISION = ("vision_tower", "vision_model", "visual", "image_encoder")


@dataclass
class FinetuneConfig:
    """Fine-tuning hyper-parameters (paper §2 "MLLM Fine-Tuning"); validated on construction."""

    base_model: str = field(default=TINY, metadata={
        "help": "the model to fine-tune: 'tiny' (the offline ~1M-parameter default) or a "
                "local directory (a Hugging Face VLM, or a serendip model directory)"})
    method: str = field(default="auto", metadata={
        "help": "auto | full | lora (auto: full for tiny, LoRA otherwise)"})
    steps: int = field(default=400, metadata={"help": "optimizer steps; >= 1"})
    batch_size: int = field(default=32, metadata={
        "help": "examples per step (summed over processes); >= 1 (the paper's 32; 8 learned "
                "the visual cue far slower)"})
    lr: float = field(default=1e-3, metadata={
        "help": "peak AdamW learning rate (linear warm-up, cosine decay to 0.1 × lr); > 0 (2e-3, 3e-3 "
                "stalled or memorised noise in some seeds)"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay; >= 0"})
    warmup_steps: int = field(default=20, metadata={
        "help": "steps of linear learning-rate warm-up; >= 0"})
    grad_clip: float = field(default=1.0, metadata={
        "help": "gradient-norm limit (L2, global); > 0"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank; >= 1 (method lora)"})
    lora_alpha: int = field(default=16, metadata={
        "help": "LoRA scaling alpha (update scaled by alpha/r); > 0"})
    lora_dropout: float = field(default=0.0, metadata={
        "help": "dropout on the LoRA input; in [0, 1)"})
    lora_targets: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj"), metadata={
            "help": "module names LoRA adapts (a list, e.g. [q_proj, v_proj]); non-empty for "
                    "method lora"})
    modules_to_save: tuple[str, ...] = field(default=("lm_head",) + PROJECTORS, metadata={
        "help": "modules trained in full next to LoRA (names present in the model; others "
                "are skipped)"})
    prompt: PromptConfig | None = field(default=None, metadata={
        "help": "the prompt config; null: the one the examples were built with (curation's "
                "manifest); set, it must equal that one"})
    eval_every: int = field(default=50, metadata={
        "help": "steps between held-out evaluations; >= 1"})
    eval_max_examples: int = field(default=256, metadata={
        "help": "held-out examples scored per evaluation; >= 1"})
    eval_batch_size: int = field(default=32, metadata={
        "help": "examples per generation batch in evaluation; >= 1"})
    save_every: int = field(default=100, metadata={
        "help": "steps between checkpoints (a re-run resumes from the last); >= 1"})
    keep_checkpoints: int = field(default=2, metadata={
        "help": "checkpoints kept on disk (older ones deleted); >= 1"})
    # Compute budget: training stops (evaluated and saved) once its steps have used this many
    # CPU seconds of this process (time.process_time: all threads; evaluation and checkpoints
    # not counted). 0 = none, ``steps`` alone decides. Same budget, fair model comparison.
    time_budget_s: float = field(default=0.0, metadata={
        "help": "compute budget, in CPU seconds of the training steps (time.process_time; "
                "evaluation and checkpoints not counted): training stops, evaluated and "
                "saved, once spent; >= 0 (0: none, steps alone decides)"})
    reasoning_tokens: int = field(default=24, metadata={
        "help": "chain of thought: free tokens generated before the answer marker is forced; "
                ">= 2"})
    seed: int = field(default=0, metadata={
        "help": "seed of data order, initial weights and dropout; >= 0"})
    precision: str = field(default="auto", metadata={
        "help": "auto (bf16 autocast on a GPU that supports it) | fp32 | bf16; weights and "
                "optimizer state stay float32"})
    tiny: TinyVLMConfig = field(default_factory=TinyVLMConfig, metadata={
        "help": "sizes of the tiny default model (base_model tiny)"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}", field="method",
                              fix=f"use one of {', '.join(METHODS)}")
        for name in ("steps", "batch_size", "eval_every", "save_every", "lora_r",
                     "eval_max_examples", "eval_batch_size", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}", field=name, fix="use >= 1")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr}", field="lr", fix="use a positive learning rate")
        for name in ("weight_decay", "warmup_steps", "seed", "time_budget_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)}", field=name, fix="use >= 0")
        if not self.grad_clip > 0:
            raise ConfigError(f"grad_clip={self.grad_clip}", field="grad_clip",
                              fix="use a positive gradient-norm limit (e.g. 1.0)")
        if not self.lora_alpha > 0:
            raise ConfigError(f"lora_alpha={self.lora_alpha}", field="lora_alpha", fix="use > 0")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout={self.lora_dropout}", field="lora_dropout",
                              fix="use a value in [0, 1)")
        if self.resolved_method() == "lora" and not self.lora_targets:
            raise ConfigError("no LoRA target modules", field="lora_targets",
                              fix="name the projections to adapt, e.g. [q_proj, v_proj]")
        # the answer marker takes at least one token and the forced marker one more step; the
        # exact bound needs the tokenizer (check_reasoning_budget, before the first step)
        if self.reasoning_tokens < 2:
            raise ConfigError(f"reasoning_tokens={self.reasoning_tokens}",
                              field="reasoning_tokens", fix="use >= 2 (default 24)")
        if self.base_model == TINY:
            self.tiny.check()
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}", field="precision",
                              fix=f"use one of {', '.join(PRECISIONS)}")
        if self.prompt is not None:
            self.prompt.check()

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """bfloat16 for mixed-precision steps (weights, optimizer state and saved model stay
        float32), or None: ``auto`` uses it on a CUDA device that supports bf16 only."""
        if self.precision == "bf16":
            return torch.bfloat16
        if self.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None

    def resolved_method(self) -> str:
        if self.method != "auto":
            return self.method
        return "full" if self.base_model == TINY else "lora"


@dataclass
class FinetuneResult:
    model_dir: Path
    metrics: dict                     # final held-out metrics
    history: list[dict]               # one row per evaluation step
    trainable_params: int
    total_params: int
    method: str
    seconds: float


EvalCallback = Callable[[int, dict], None]


# ---------------------------------------------------------------------------- inputs
def _candidates(clusters: pa.Table, level: int) -> tuple[list[str], list[str]]:
    lv = clusters.filter(pc.equal(clusters.column("level"), level))
    lv = lv.sort_by("cluster_id")
    return lv.column("cluster_id").to_pylist(), lv.column("description").to_pylist()


def target_level(examples: pa.Table, clusters: pa.Table) -> int:
    level_of = dict(zip(clusters.column("cluster_id").to_pylist(),
                        clusters.column("level").to_pylist()))
    levels = {level_of.get(c) for c in set(examples.column("target_cluster_id").to_pylist())}
    if None in levels:
        raise SerendipError("examples target clusters missing from the clusters table",
                            field="target_cluster_id", fix="curate against these clusters")
    if len(levels) != 1:
        raise SerendipError(f"targets span levels {sorted(levels)}", field="target_cluster_id",
                            fix="curate examples at one tree level")
    return int(levels.pop())


def example_targets(examples: pa.Table, prompt: PromptConfig) -> list[str]:
    descs = examples.column("target_description").to_pylist()
    reasons = (examples.column("reasoning").to_pylist() if "reasoning" in examples.column_names
               else [None] * len(descs))
    return [build_target(prompt, d, r) for d, r in zip(descs, reasons)]


def split(examples: pa.Table, name: str) -> pa.Table:
    return examples.filter(pc.equal(examples.column("split"), name))


# ---------------------------------------------------------------------------- model
def _language_targets(model, names: tuple[str, ...]) -> list[str]:
    """Full names of the language-side linear layers whose last component is in ``names``."""
    out = []
    for full, module in model.named_modules():
        parts = full.split(".")
        if parts[-1] in names and isinstance(module, torch.nn.Linear) \
                and not any(v in parts for v in VISION):
            out.append(full)
    if not out:
        raise ConfigError(f"no language-model layers named {list(names)}",
                          field="lora_targets",
                          fix="name the decoder's projections (e.g. q_proj, v_proj)")
    return out


def _apply_lora(model, cfg: FinetuneConfig):
    from peft import LoraConfig, get_peft_model

    existing = {n.split(".")[-1] for n, _ in model.named_modules()}
    save = [m for m in cfg.modules_to_save if m in existing]
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=_language_targets(model, tuple(cfg.lora_targets)),
                      modules_to_save=save or None, bias="none")
    return get_peft_model(model, lcfg)


def check_reasoning_budget(cfg: FinetuneConfig, prompt: PromptConfig, tokenizer) -> None:
    """Chain of thought needs ``reasoning_tokens`` > the answer marker's length in this
    tokenizer (the marker is forced at the end of the budget); checked before training so a
    bad value fails at once instead of at the first evaluation (issue 12, case 11).

    Raises:
        ConfigError: ``reasoning_tokens`` too small for this tokenizer's marker."""
    from serendip.mllm.data import marker_ids

    if prompt.strategy != "cot":
        return
    need = len(marker_ids(tokenizer)) + 1
    if cfg.reasoning_tokens < need:
        raise ConfigError(f"reasoning budget {cfg.reasoning_tokens} is shorter than the answer "
                          f"marker ({need - 1} tokens) plus one", field="reasoning_tokens",
                          fix=f"use >= {need}")


def _resolve_base(cfg: FinetuneConfig, corpus: list[str], work: Path, resume: bool):
    """(model, processor) to start from; the tiny tokenizer is trained once and kept in work/."""
    proc_dir = work / "processor"
    if cfg.base_model == TINY:
        from transformers import AutoProcessor

        if resume and (proc_dir / "processor_config.json").exists():
            processor = AutoProcessor.from_pretrained(proc_dir, local_files_only=True)
        else:
            processor = build_processor(train_tokenizer(corpus, cfg.tiny.vocab_size), cfg.tiny)
            _save_dir(processor, proc_dir)
        return build_model(tokenizer_of(processor), cfg.tiny), processor
    base = check_local(cfg.base_model)
    if (base / META).exists():       # continue from a previous serendip model
        model, processor = load_model_dir(base, read_meta(base))
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        return model, processor
    return load_base(base)


def train_mode(model) -> None:
    """``model.train()``, but a frozen vision tower stays in eval mode: a pretrained CNN tower
    (EfficientNet in the pretrained base) would otherwise update its BatchNorm running
    statistics and apply stochastic depth while its weights are meant to stay fixed."""
    model.train()
    for name, module in model.named_modules():
        if name.split(".")[-1] in VISION and not any(p.requires_grad
                                                     for p in module.parameters()):
            module.eval()


def _save_dir(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    obj.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- checkpoints
def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters()
            if p.requires_grad}


def _save_checkpoint(work: Path, step: int, model, opt, loop_state: dict,
                     keep: int) -> Path:
    from safetensors.torch import save_file

    ckpt_root = work / "checkpoints"
    final = ckpt_root / f"step-{step:07d}"
    tmp = ckpt_root / f".step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_trainable_state(model), str(tmp / "trainable.safetensors"))
    tensors, scalars = {}, {}
    for idx, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = v.contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    groups = opt.state_dict()["param_groups"]
    (tmp / "optimizer.json").write_text(json.dumps({"param_groups": groups, "scalars": scalars}))
    (tmp / "state.json").write_text(json.dumps(loop_state))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(ckpt_root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(work: Path) -> Path | None:
    done = sorted(p for p in (work / "checkpoints").glob("step-*")
                  if (p / "state.json").exists())
    return done[-1] if done else None


def _load_checkpoint(ckpt: Path, model, opt) -> dict:
    from safetensors.torch import load_file

    state = load_file(str(ckpt / "trainable.safetensors"))
    params = dict(model.named_parameters())
    unknown = set(state) - set(params)
    if unknown:
        raise ConfigError(f"checkpoint {ckpt.name} does not fit this model "
                          f"(e.g. {sorted(unknown)[0]})", field="resume",
                          fix="use a new run directory, or the same config as before")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    meta = json.loads((ckpt / "optimizer.json").read_text())
    opt_state: dict = {}
    for key, t in tensors.items():
        idx, k = key.split(".", 1)
        opt_state.setdefault(int(idx), {})[k] = t
    for key, v in meta["scalars"].items():
        idx, k = key.split(".", 1)
        opt_state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    return json.loads((ckpt / "state.json").read_text())


def _config_key(cfg: FinetuneConfig) -> dict:
    """Settings that must not change across a resume (cadence and length may)."""
    d = asdict(cfg)
    for k in ("steps", "eval_every", "eval_max_examples", "eval_batch_size", "save_every",
              "keep_checkpoints", "precision", "time_budget_s"):
        d.pop(k)
    return json.loads(json.dumps(d, default=str))


# ---------------------------------------------------------------------------- evaluation
def evaluate_predictor(predictor: ClusterPredictor, examples: pa.Table,
                       max_examples: int | None = None) -> dict:
    """Held-out match rate and recall, unconstrained and with the trie (k=1)."""
    from serendip.metrics import match_rate, recall

    if max_examples and examples.num_rows > max_examples:   # evenly spaced, not the head
        idx = np.unique(np.linspace(0, examples.num_rows - 1, max_examples).astype(np.int64))
        examples = examples.take(pa.array(idx))
    prompts = examples.column("prompt").to_pylist()
    images = [x or [] for x in examples.column("images").to_pylist()]
    labels = examples.column("target_description").to_pylist()
    out = {"n": examples.num_rows}
    for constrained, suffix in ((False, ""), (True, "_constrained")):
        preds = predictor.predict_prompts(prompts, images, k=1, constrained=constrained)
        answers = [p[0].description if p else None for p in preds]
        out["match_rate" + suffix] = match_rate(answers, predictor.descriptions)
        out["recall" + suffix] = recall(answers, labels)
    return out


# ---------------------------------------------------------------------------- one step
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


# ---------------------------------------------------------------------------- setup and save
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

    def predictor(self, cfg: FinetuneConfig) -> ClusterPredictor:
        return ClusterPredictor(self.model, self.processor, self.cluster_ids, self.descriptions,
                                self.prompt, self.level, image_size=self.image_size,
                                reasoning_tokens=cfg.reasoning_tokens,
                                batch_size=cfg.eval_batch_size, base_dir=self.base_dir)


def _check_inputs(examples: pa.Table, clusters: pa.Table, cfg: FinetuneConfig,
                  prompt_config: PromptConfig | None):
    """(prompt, level, cluster ids, descriptions, train, test) of valid inputs; nothing is
    written before these checks pass."""
    prompt = prompt_config or cfg.prompt
    if prompt is None:               # never guessed from the examples (issue 13)
        raise ConfigError("the prompt config the examples were built with is not given",
                          field="prompt", fix="pass prompt_config (CurationResult.prompt, or "
                                              "the prompt object of curation.json)")
    prompt.check()
    if cfg.prompt is not None and cfg.prompt != prompt:
        raise ConfigError(f"examples were built with {prompt}, the config asks for {cfg.prompt}",
                          field="prompt", fix="rebuild the examples with build_examples, or "
                                              "drop prompt from the fine-tune config")
    strategies = set(examples.column("strategy").to_pylist())
    if strategies != {prompt.strategy}:
        raise ConfigError(f"examples have strategy {sorted(strategies)}, prompt config "
                          f"{prompt.strategy!r}", field="strategy",
                          fix="rebuild the examples for this strategy")
    level = target_level(examples, clusters)
    cluster_ids, descriptions = _candidates(clusters, level)
    train, test = split(examples, "train"), split(examples, "test")
    if train.num_rows == 0:
        raise SerendipError("no training examples (split == 'train')", field="examples",
                            fix="curate with a test_fraction below 1")
    return prompt, level, cluster_ids, descriptions, train, test


def _build_model(cfg: FinetuneConfig, prompt: PromptConfig, corpus: list[str], work: Path,
                 resume: bool, ctx):
    """(model on the device in train mode, processor, method, base snapshot): the base (the
    tiny tokenizer trained once, on rank 0) and, for LoRA, its adapters."""
    # Rank 0 trains the tiny tokenizer and writes the snapshots; the others then read them.
    if not ctx.is_main:
        ctx.barrier()
    model, processor = _resolve_base(cfg, corpus, work, resume or not ctx.is_main)
    check_reasoning_budget(cfg, prompt, tokenizer_of(processor))   # before the first step
    method = cfg.resolved_method()
    base_snapshot = None
    if method == "lora":
        size_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        if cfg.base_model == TINY or size_mb <= 200:
            base_snapshot = work / "base"
            if ctx.is_main and not (resume and (base_snapshot / "config.json").exists()):
                _save_dir(model, base_snapshot)
        model = _apply_lora(model, cfg)
    if ctx.is_main:
        ctx.barrier()
    model.to(ctx.device)
    train_mode(model)
    return model, processor, method, base_snapshot


def _encode_train(processor, image_size: int | None, base_dir: str | None, train: pa.Table,
                  prompt: PromptConfig, progress: bool) -> list[Encoded]:
    encoder = Encoder(processor, image_size, base_dir)
    prompts = tqdm(train.column("prompt").to_pylist(), desc="encode", disable=not progress,
                   leave=False)
    return [encoder.encode(p, im or [], t) for p, im, t in zip(
        prompts, train.column("images").to_pylist(), example_targets(train, prompt))]


def _resume_state(work: Path, cfg: FinetuneConfig, model, opt, resume: bool
                  ) -> tuple[int, list[dict]]:
    """(step, history) of the latest checkpoint under ``work`` (loaded into model and
    optimizer), or (0, []) for a fresh run."""
    ckpt = latest_checkpoint(work) if resume else None
    if ckpt is None:
        return 0, []
    state = _load_checkpoint(ckpt, model, opt)
    if state["config"] != _config_key(cfg):
        raise ConfigError(f"{work} holds a run with another config", field="resume",
                          fix="use a new run name or resume=false (--no-resume)")
    return state["step"], state["history"]


def _setup(examples: pa.Table, clusters: pa.Table, cfg: FinetuneConfig, out_dir,
           prompt_config: PromptConfig | None, items: pa.Table | None, resume: bool,
           base_dir: str | None, progress: bool, device: str) -> _Run:
    """Check the inputs, join the process group, prepare the work folder, build the model,
    encode the train split and the optimizer, and load the checkpoint to resume from."""
    prompt, level, cluster_ids, descriptions, train, test = _check_inputs(
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
    model, processor, method, base_snapshot = _build_model(cfg, prompt, corpus, work, resume,
                                                           ctx)
    image_size = cfg.tiny.image_size if cfg.base_model == TINY else None
    encoded = _encode_train(processor, image_size, base_dir, train, prompt, progress)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = _resume_state(work, cfg, model, opt, resume)
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


def _finish(run: _Run, cfg: FinetuneConfig, t0: float) -> FinetuneResult:
    """Rank 0 saves the model directory (safetensors, serendip.json with the prompt manifest,
    history.json); every rank leaves the process group."""
    n_train = sum(p.numel() for p in run.params)
    n_total = sum(p.numel() for p in run.model.parameters())
    final: dict = {}
    if run.ctx.is_main:
        final = {k: v for k, v in run.history[-1].items()
                 if k not in ("elapsed_s", "train_cpu_s")}
        predictor = run.predictor(cfg)
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


# ---------------------------------------------------------------------------- training
def finetune(examples: pa.Table, clusters: pa.Table, cfg: FinetuneConfig,
             out_dir: str | os.PathLike, prompt_config: PromptConfig | None = None,
             items: pa.Table | None = None, on_eval: EvalCallback | None = None,
             resume: bool = True, base_dir: str | None = None,
             progress: bool = True, device: str = "auto") -> FinetuneResult:
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
            _save_checkpoint(run.work, done, model, opt,
                             {"step": done, "history": run.history, "config": _config_key(cfg)},
                             cfg.keep_checkpoints)
        if done % cfg.eval_every == 0 or done % cfg.save_every == 0 or over:
            ctx.barrier()
        if over:
            break
    bar.close()
    if ctx.is_main and (not run.history or run.history[-1]["step"] != done):
        _evaluate(run, cfg, done, loss_sum / max(loss_n, 1), t0, train_cpu, on_eval)
    return _finish(run, cfg, t0)


def to_jsonable(cfg) -> dict:
    return json.loads(json.dumps(asdict(cfg), default=str))
