"""MLLM fine-tuning and decoding: training throughput, peak memory, LoRA vs full.

Each (size, method) runs in its own child process so its peak RSS is its own. Data: a small
synthetic platform, ground-truth clusters, real curation (video prompt, 4 frames × 64 px).
Reported per run: seconds per optimizer step (batch 32, the default; after warm-up), examples
and images per second, trainable/total parameters, the analytic training-state memory
(weights + gradients + AdamW moments of what trains) and the child's peak RSS. The
full-training child also times trie-constrained decoding (k=1 greedy, k=5 beam), free
generation, and the trie's own cost: the same greedy steps with and without its processor.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, resource, sys, time
import pyarrow.compute as pc
import torch
torch.set_num_threads(1)
from serendip.curation import CurationConfig, curate
from serendip.data.io import read_table
from serendip.data.synth import SynthConfig, write_synth
from serendip.mllm.data import Encoder, collate_train
from serendip.mllm.inference import ClusterPredictor
from serendip.mllm.tiny import TinyVLMConfig, build_tiny_vlm, tokenizer_corpus
from serendip.mllm.config import FinetuneConfig
from serendip.mllm.data import example_targets, split
from serendip.mllm.train import _loss
from serendip.mllm.trainable import apply_lora
from serendip.prompts import PromptConfig
from serendip.testing.truth import truth_clusters

out, method, size, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
BS = 32  # the default FinetuneConfig.batch_size
write_synth(SynthConfig(items=600, users=200, interactions=8000, seed=7,
                        branching=(2, 2, 3, 2)), out, with_ceiling=False)
items, inter = read_table(out, "items"), read_table(out, "interactions")
clusters, item_clusters = truth_clusters(out)
prompt = PromptConfig("video", 4)
ex = curate(items, inter, clusters, item_clusters, CurationConfig(prompt=prompt)).examples
train = split(ex, "train")
tiny = TinyVLMConfig() if size == "tiny" else TinyVLMConfig(
    vision_hidden=128, vision_layers=4, text_hidden=256, text_layers=4, text_heads=8,
    text_intermediate=768)
lv = clusters.filter(pc.equal(clusters["level"], 3))
descs = lv.column("description").to_pylist()
model, processor = build_tiny_vlm(tokenizer_corpus(items.column("title").to_pylist(), descs), tiny)
if method == "lora":
    model = apply_lora(model, FinetuneConfig())
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
enc = Encoder(processor, 64, out)
encoded = [enc.encode(p, im, t) for p, im, t in zip(train["prompt"].to_pylist(),
           train["images"].to_pylist(), example_targets(train, prompt))]
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-3)
pad = processor.tokenizer.pad_token_id
model.train()
times = []
for step in range(steps):
    batch = collate_train([encoded[(step * BS + i) % len(encoded)] for i in range(BS)], pad)
    t0 = time.perf_counter()
    loss = _loss(model, batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - t0)
warm = times[min(5, len(times) - 1):]
sec = sorted(warm)[len(warm) // 2]
n_train = sum(p.numel() for p in params)
n_total = sum(p.numel() for p in model.parameters())
res = {"method": method, "size": size, "steps": steps, "s_per_step_median": sec,
       "examples_per_s": BS / sec, "images_per_s": 4 * BS / sec, "trainable_params": n_train,
       "total_params": n_total,
       "train_state_mb": (n_total * 4 + n_train * 4 * 3) / 2**20,
       "rss_after_build_mb": rss0,
       "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if method == "full":
    test = split(ex, "test")
    prompts, imgs = test["prompt"].to_pylist()[:64], test["images"].to_pylist()[:64]
    pred = ClusterPredictor(model, processor, lv["cluster_id"].to_pylist(), descs, prompt, 3,
                            image_size=64, batch_size=32, base_dir=out)
    pred.predict_prompts(prompts[:4], imgs[:4])                      # warm-up
    for name, kw in (("constrained_k1", dict(k=1)), ("constrained_k5", dict(k=5)),
                     ("free_k1", dict(k=1, constrained=False))):
        t0 = time.perf_counter()
        pred.predict_prompts(prompts, imgs, **kw)
        res[f"decode_{name}_ms_per_item"] = 1000 * (time.perf_counter() - t0) / len(prompts)
    # the trie's own cost: the same number of greedy steps with and without the processor
    from serendip.mllm.data import collate_generate
    from serendip.mllm.trie import TrieLogitsProcessor
    batch = [pred.encoder.encode(p, im) for p, im in zip(prompts[:32], imgs[:32])]
    inputs = collate_generate(batch, pad, [pred.marker] * len(batch))
    n_new = pred.trie.max_len
    for name, procs in (("plain", None), ("trie", [TrieLogitsProcessor(
            pred.trie, inputs["input_ids"].shape[1], pad)])):
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            with torch.inference_mode():
                model.generate(**inputs, max_new_tokens=n_new, min_new_tokens=n_new,
                               do_sample=False, pad_token_id=pad, eos_token_id=None,
                               logits_processor=procs)
            best = min(best, time.perf_counter() - t0)
        res[f"greedy_{n_new}_tokens_batch32_{name}_ms_per_item"] = 1000 * best / len(batch)
print(json.dumps(res))
"""


def _child(method: str, size: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run([sys.executable, "-c", CHILD, out, method, size, str(steps)],
                              check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    t0 = time.perf_counter()
    sizes = ("tiny",) if quick else ("tiny", "small")
    steps = 15 if quick else 40
    runs = {f"{size}_{m}": _child(m, size, steps) for size in sizes for m in ("full", "lora")}
    out: dict = {"runs": runs, "batch": "32 examples x 4 frames x 64 px, video prompt"}
    for size in sizes:
        full, lora = runs[f"{size}_full"], runs[f"{size}_lora"]
        out[f"{size}_lora_vs_full"] = {
            "step_time_ratio": round(lora["s_per_step_median"] / full["s_per_step_median"], 3),
            "train_state_ratio": round(lora["train_state_mb"] / full["train_state_mb"], 3),
            "peak_rss_ratio": round(lora["peak_rss_mb"] / full["peak_rss_mb"], 3),
            "trainable_fraction": round(lora["trainable_params"] / lora["total_params"], 3)}
        plain = [v for k, v in full.items() if k.startswith("greedy_") and k.endswith("_plain_ms_per_item")]
        trie = [v for k, v in full.items() if k.startswith("greedy_") and k.endswith("_trie_ms_per_item")]
        if plain and trie:
            out[f"{size}_trie_time_ratio"] = round(trie[0] / plain[0], 3)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out
