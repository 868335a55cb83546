"""The fine-tuning config (:class:`FinetuneConfig`, validated on construction) and result.

Defaults for the tiny model, measured on the synthetic platform (2000 items, 4/3/4/2 tree, CoT
with 4 frames, ~380 curated examples whose labels name the true bridge topic only ~55% of the
time): batch 32 (the paper's) and lr 1e-3 reach ~0.4 held-out recall in 300 steps while
batch 8 or 16 stay near 0.2 after 500-800 steps — the visual cue (a small motif in some
frames) needs many images per update to emerge from noisy labels; lr 2e-3/3e-3 stalled or
memorised. Weight decay 0.1 stabilises across seeds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from serendip.errors import ConfigError
from serendip.mllm.loading import TINY
from serendip.mllm.tiny import TinyVLMConfig
from serendip.prompts import PromptConfig

METHODS = ("auto", "full", "lora")
PRECISIONS = ("auto", "fp32", "bf16")
PROJECTORS = ("multi_modal_projector", "connector", "merger", "mm_projector")


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
    prior_weight: float = field(default=1.0, metadata={
        "help": "logit adjustment τ: the saved model adds τ · log π(cluster | context's "
                "cluster), the logged transition prior of the training contexts "
                "(serendip.transitions), to each candidate's log-likelihood, undoing the "
                "uniform target prior of the top-k-per-cluster curation; >= 0 (0: the model "
                "alone, 1: Bayes' rule); scoring only: a re-run with another weight re-saves "
                "the trained model without training"})
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
        for name in ("weight_decay", "warmup_steps", "seed", "time_budget_s", "prior_weight"):
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


def to_jsonable(cfg) -> dict:
    return json.loads(json.dumps(asdict(cfg), default=str))
