"""The model that trains: the base to start from (the tiny model, a local Hugging Face VLM,
or a previous serendip model), LoRA adapters on the language side, and train mode.

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
"""

from __future__ import annotations

from pathlib import Path

import torch

from serendip.errors import ConfigError
from serendip.mllm.checkpoints import save_dir
from serendip.mllm.config import FinetuneConfig
from serendip.mllm.inference import META, load_model_dir, read_meta
from serendip.mllm.loading import TINY, check_local, load_base, tokenizer_of
from serendip.mllm.tiny import build_model, build_processor, train_tokenizer
from serendip.prompts import PromptConfig

VISION = ("vision_tower", "vision_model", "visual", "image_encoder")


def language_targets(model, names: tuple[str, ...]) -> list[str]:
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


def apply_lora(model, cfg: FinetuneConfig):
    """``model`` wrapped by peft with LoRA adapters on its language-side ``cfg.lora_targets``
    and ``cfg.modules_to_save`` (those present) trained in full.

    Raises:
        ConfigError: no language-model layer has one of the target names."""
    from peft import LoraConfig, get_peft_model

    existing = {n.split(".")[-1] for n, _ in model.named_modules()}
    save = [m for m in cfg.modules_to_save if m in existing]
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=language_targets(model, tuple(cfg.lora_targets)),
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


def resolve_base(cfg: FinetuneConfig, corpus: list[str], work: Path, resume: bool):
    """(model, processor) to start from; the tiny tokenizer is trained once and kept in work/."""
    proc_dir = work / "processor"
    if cfg.base_model == TINY:
        from transformers import AutoProcessor

        if resume and (proc_dir / "processor_config.json").exists():
            processor = AutoProcessor.from_pretrained(proc_dir, local_files_only=True)
        else:
            processor = build_processor(train_tokenizer(corpus, cfg.tiny.vocab_size), cfg.tiny)
            save_dir(processor, proc_dir)
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


def prepare_model(cfg: FinetuneConfig, prompt: PromptConfig, corpus: list[str], work: Path,
                  resume: bool, ctx):
    """(model on the device in train mode, processor, method, base snapshot): the base (the
    tiny tokenizer trained once, on rank 0) and, for LoRA, its adapters."""
    # Rank 0 trains the tiny tokenizer and writes the snapshots; the others then read them.
    if not ctx.is_main:
        ctx.barrier()
    model, processor = resolve_base(cfg, corpus, work, resume or not ctx.is_main)
    check_reasoning_budget(cfg, prompt, tokenizer_of(processor))   # before the first step
    method = cfg.resolved_method()
    base_snapshot = None
    if method == "lora":
        size_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        if cfg.base_model == TINY or size_mb <= 200:
            base_snapshot = work / "base"
            if ctx.is_main and not (resume and (base_snapshot / "config.json").exists()):
                save_dir(model, base_snapshot)
        model = apply_lora(model, cfg)
    if ctx.is_main:
        ctx.barrier()
    model.to(ctx.device)
    train_mode(model)
    return model, processor, method, base_snapshot
