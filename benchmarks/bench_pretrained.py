"""The pretrained base (EfficientNet-Lite0 + SmolLM2-135M-Instruct, ``serendip base build``) on
CPU, one thread: build time and size, seconds per LoRA fine-tuning step, and which weights to
train, measured rather than guessed — LoRA on q/v vs q/k/v/o, with ``lm_head`` trained in full
or frozen (the projector always trains) — by a short fine-tune of each on the same synthetic
examples (real curation, video prompt, one frame) with held-out match rate and recall.

The base directory: ``SERENDIP_BASE_DIR``, else ``~/.cache/serendip/base`` (built there once;
a second build is a no-op). A handful of steps per setting is all a shared 2-core machine
affords: the comparison says which settings learn fastest at the start, not where they end.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

SETTINGS = {
    "qv+lm_head": dict(lora_targets=("q_proj", "v_proj")),
    "qkvo+lm_head": dict(lora_targets=("q_proj", "k_proj", "v_proj", "o_proj")),
    "qv": dict(lora_targets=("q_proj", "v_proj"), modules_to_save=("multi_modal_projector",)),
    "qkvo": dict(lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"),
                 modules_to_save=("multi_modal_projector",)),
}


def _data(out: Path):
    from serendip.curation import CurationConfig, curate
    from serendip.data.io import read_table
    from serendip.data.synth import SynthConfig, write_synth
    from serendip.prompts import PromptConfig
    from serendip.testing.truth import truth_clusters

    write_synth(SynthConfig(items=600, users=200, interactions=8000, seed=7,
                            branching=(2, 2, 3, 2)), out, with_ceiling=False)
    items, inter = read_table(out, "items"), read_table(out, "interactions")
    clusters, item_clusters = truth_clusters(out)
    prompt = PromptConfig("video", 1)
    ex = curate(items, inter, clusters, item_clusters, CurationConfig(prompt=prompt)).examples
    return ex, clusters, prompt


def _step_time(base: Path, ex, prompt, out: Path, batch: int, steps: int) -> float:
    from serendip.mllm.config import FinetuneConfig
    from serendip.mllm.data import Encoder, collate_train, example_targets, split
    from serendip.mllm.loading import load_base
    from serendip.mllm.train import _loss
    from serendip.mllm.trainable import apply_lora, train_mode

    model, processor = load_base(base)
    model = apply_lora(model, FinetuneConfig(base_model=str(base)))
    train = split(ex, "train")
    enc = Encoder(processor, None, out)
    encoded = [enc.encode(p, im, t) for p, im, t in zip(
        train["prompt"].to_pylist()[:batch], train["images"].to_pylist()[:batch],
        example_targets(train.slice(0, batch), prompt))]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    train_mode(model)
    times = []
    for _ in range(steps + 1):
        b = collate_train(encoded, processor.tokenizer.pad_token_id)
        t0 = time.perf_counter()
        loss = _loss(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    warm = sorted(times[1:])
    return round(warm[len(warm) // 2], 2)


def run(quick: bool = False) -> dict:
    from serendip.mllm.base import build_base
    from serendip.mllm.config import FinetuneConfig
    from serendip.mllm.train import finetune

    torch.set_num_threads(1)
    base = Path(os.environ.get("SERENDIP_BASE_DIR")
                or Path.home() / ".cache" / "serendip" / "base")
    t0 = time.perf_counter()
    built = build_base(base, progress=False)
    res: dict = {"threads": 1, "base_dir": str(base), "params": built.params,
                 "size_mb": round(built.size_bytes / 2**20, 1),
                 "build_s": built.seconds if built.built else "cached (see serendip_base.json)",
                 "build_or_check_wall_s": round(time.perf_counter() - t0, 1)}
    if not built.built:
        import json

        res["build_s_recorded"] = json.loads((base / "serendip_base.json").read_text()).get(
            "build_seconds")
    tmp = Path(tempfile.mkdtemp(prefix="bench-pretrained-"))
    try:
        ex, clusters, prompt = _data(tmp)
        res["examples"] = ex.num_rows
        for bs in ((4,) if quick else (4, 8)):
            res[f"s_per_step_batch{bs}_lora_qkvo_lm_head"] = _step_time(
                base, ex, prompt, tmp, bs, 2 if quick else 3)
        steps = 6 if quick else 16
        compare = {}
        for name, kw in SETTINGS.items():
            cfg = FinetuneConfig(base_model=str(base), steps=steps, batch_size=4, lr=2e-4,
                                 warmup_steps=2, eval_every=steps, save_every=steps,
                                 eval_max_examples=8 if quick else 24, eval_batch_size=8, **kw)
            t1 = time.perf_counter()
            r = finetune(ex, clusters, cfg, tmp / "runs" / name, prompt_config=prompt,
                         resume=False, base_dir=str(tmp), progress=False)
            compare[name] = {"steps": steps, "batch_size": 4, "seconds": round(
                time.perf_counter() - t1, 1), "trainable_params": r.trainable_params,
                **{k: r.metrics[k] for k in ("train_loss", "match_rate", "recall",
                                             "match_rate_constrained", "recall_constrained")}}
            shutil.rmtree(tmp / "runs" / name, ignore_errors=True)
        res["lora_settings"] = compare
        res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
