"""Exact top-k by likelihood (prompt encoded once, its KV cache reused for every candidate;
``serendip.mllm.likelihood``) vs naive per-item ``model.generate`` — with each context's
candidates limited to a handful: the level-l clusters under the same level-(l-2) ancestor as
its own cluster, its own excluded (11 on the 4/3/4/2 tree: the siblings a serendipitous answer
comes from).

Three ways to the top-1 answer, same model, same inputs, one thread:

* ``naive_greedy`` — one item at a time, ``generate`` with ``prefix_allowed_tokens_fn`` over the
  item's candidate trie, greedy (the standard constrained decoding; not always the most likely
  candidate);
* ``naive_exact`` — one item at a time, beam search with one beam per candidate over the same
  trie (exhaustive: the exact top-1 — and top-k);
* ``likelihood`` — ``ClusterPredictor.predict(..., candidates=...)`` in batches: exact.

Models: the tiny default of the scoring fixture and, when it can be built or found (the
``SERENDIP_BASE_DIR`` directory, else ``~/.cache/serendip/base``, built there once by
``serendip base build``), the pretrained base (EfficientNet-Lite0 + SmolLM2-135M) with the same
candidates — untrained for this task, which changes answers, not speed or agreement.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from serendip.data.io import read_table
from serendip.data.synth import SynthConfig, write_synth
from serendip.mllm.data import collate_generate
from serendip.mllm.inference import ClusterPredictor
from serendip.mllm.trie import candidate_trie
from serendip.prompts import PromptConfig, build_prompt
from serendip.scoring.inputs import predictor_inputs
from serendip.testing.scoring import ScoringFixtureConfig, build_scoring_workdir


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def sibling_candidates(clusters, item_clusters, items: list[dict], level: int) -> list[list[str]]:
    """Per item: the level-``level`` clusters under its cluster's level-(level-2) ancestor,
    its own cluster excluded."""
    rows = clusters.to_pylist()
    parent = {r["cluster_id"]: r["parent_id"] for r in rows}
    lv = [r["cluster_id"] for r in rows if r["level"] == level]

    def up(c: str, n: int) -> str:
        for _ in range(n):
            c = parent[c]
        return c

    own = dict(zip(item_clusters.column("item_id").to_pylist(),
                   item_clusters.column(f"c{level}").to_pylist()))
    out = []
    for x in items:
        c = own[x["item_id"]]
        anc = up(c, 2)
        out.append([d for d in lv if d != c and up(d, 2) == anc])
    return out


def naive(p: ClusterPredictor, inputs: list[dict], cands: list[list[str]], exact: bool
          ) -> list[str]:
    """One item at a time: ``generate`` under the item's candidate trie (greedy, or one beam
    per candidate = exhaustive)."""
    index = {c: j for j, c in enumerate(p.cluster_ids)}
    out = []
    with torch.inference_mode():
        for i, (x, cs) in enumerate(zip(inputs, cands)):
            trie, _ = candidate_trie(p.tokenizer, [p.descriptions[index[c]] for c in cs])
            enc = p.encoder.encode(build_prompt(p.prompt_config, x["title"],
                                                x["context_description"]), p._images_for(x, i))
            batch = collate_generate([enc], p.pad_id, [p.marker])
            start = batch["input_ids"].shape[1]

            def allowed(_, ids, start=start, trie=trie):
                node = trie.walk(ids[start:].tolist())
                return list(node.children) if node is not None and node.children else [p.pad_id]

            beams = len(cs) if exact else 1
            seq = p.model.generate(**batch, max_new_tokens=trie.max_len, do_sample=False,
                                   num_beams=beams, length_penalty=0.0,
                                   prefix_allowed_tokens_fn=allowed, pad_token_id=p.pad_id,
                                   eos_token_id=p.eos_id)
            row = seq[0, start:].tolist()
            row = row[:row.index(p.eos_id) + 1] if p.eos_id in row else row
            idx = trie.lookup(row)
            out.append(cs[idx] if idx is not None else None)
    return out


def compare(p: ClusterPredictor, inputs: list[dict], cands: list[list[str]], batch_size: int,
            naive_items: int) -> dict:
    p.batch_size = batch_size
    p.predict(inputs[:2], k=1, candidates=cands[:2])                 # warm-up (lazy init)
    res: dict = {"items": len(inputs), "candidates_per_item": round(
        sum(map(len, cands)) / len(cands), 2), "batch_size": batch_size}
    p.encoder._images.clear()
    t0 = time.perf_counter()
    lik = [r[0].cluster_id for r in p.predict(inputs, k=1, candidates=cands)]
    res["likelihood_items_per_s"] = round(len(inputs) / (time.perf_counter() - t0), 3)
    m = min(naive_items, len(inputs))
    for name, exact in (("naive_greedy", False), ("naive_exact", True)):
        p.encoder._images.clear()
        t0 = time.perf_counter()
        top = naive(p, inputs[:m], cands[:m], exact)
        res[f"{name}_items_per_s"] = round(m / (time.perf_counter() - t0), 3)
        res[f"{name}_items"] = m
        res[f"same_top1_as_{name}"] = round(sum(a == b for a, b in zip(lik, top)) / m, 4)
        res[f"speedup_vs_{name}"] = round(res["likelihood_items_per_s"]
                                          / res[f"{name}_items_per_s"], 2)
    # all candidates of the level, for scale (the trie-free exact ranking of every cluster)
    p.encoder._images.clear()
    t0 = time.perf_counter()
    p.predict(inputs[:m], k=3, candidates=[p.cluster_ids] * m)
    res["likelihood_all_clusters_items_per_s"] = round(m / (time.perf_counter() - t0), 3)
    res["clusters_at_level"] = len(p.cluster_ids)
    res["peak_rss_mb_so_far"] = peak_rss_mb()
    return res


def pretrained_dir(build: bool) -> Path | None:
    d = Path(os.environ.get("SERENDIP_BASE_DIR")
             or Path.home() / ".cache" / "serendip" / "base")
    if (d / "serendip_base.json").exists():
        return d
    if not build:
        return None
    try:
        from serendip.mllm.base import build_base

        return build_base(d, progress=False).path
    except Exception as e:  # noqa: BLE001 - a missing optional package: report, do not fail
        print(f"pretrained base unavailable: {e}")
        return None


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    synth = SynthConfig(items=600 if quick else 2000, users=200 if quick else 500,
                        interactions=8000 if quick else 20000, seed=7,
                        branching=(2, 2, 3, 2) if quick else (4, 3, 4, 2))
    tmp = Path(tempfile.mkdtemp(prefix="bench-likelihood-"))
    try:
        base = tmp / "wd"
        write_synth(synth, base)
        _, model_dir = build_scoring_workdir(base, ScoringFixtureConfig(
            items=synth.items, users=synth.users, interactions=synth.interactions,
            branching=synth.branching, seed=7))
        items = read_table(base, "items")
        clusters, ic = read_table(base, "clusters"), read_table(base, "item_clusters")
        p = ClusterPredictor.load(model_dir)
        inputs, _, _ = predictor_inputs(items, ic, clusters, p.level, p.prompt_config.uses_images)
        keep = [(x, r) for x, r in zip(inputs, items.to_pylist()) if x is not None]
        n = 64 if quick else 192
        sample = [x for x, _ in keep[:n]]
        cands = sibling_candidates(clusters, ic, [r for _, r in keep[:n]], p.level)
        out: dict = {"threads": 1, "prompt": p.prompt_config.strategy,
                     "frames": p.prompt_config.n_frames, "target": ">= 10x vs naive_greedy"}
        out["tiny"] = compare(p, sample, cands, batch_size=32, naive_items=n)
        out["tiny"]["params"] = sum(q.numel() for q in p.model.parameters())

        d = pretrained_dir(build=not quick)
        if d is None:
            out["pretrained"] = "skipped: no built base (serendip base build)"
            return out
        from serendip.mllm.loading import load_base

        t0 = time.perf_counter()
        model, processor = load_base(d)
        load_s = round(time.perf_counter() - t0, 2)
        big = ClusterPredictor(model, processor, p.cluster_ids, p.descriptions,
                               PromptConfig(**vars(p.prompt_config)), p.level, batch_size=8)
        m = 8 if quick else 16
        out["pretrained"] = compare(big, sample[:m], cands[:m], batch_size=8, naive_items=m)
        out["pretrained"].update(params=sum(q.numel() for q in model.parameters()),
                                 load_s=load_s, base_dir=str(d))
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
