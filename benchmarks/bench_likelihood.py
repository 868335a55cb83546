"""Exact top-k by likelihood (prompts batched, their shared prefix encoded once, each prompt's
KV cache reused by all its candidates packed as one trie; ``serendip.mllm.likelihood``) vs
naive per-item ``model.generate`` — with each context's candidates limited to a handful: the
level-l clusters under the same level-(l-2) ancestor as its own cluster, its own excluded (11 on
the 4/3/4/2 tree: the siblings a serendipitous answer comes from).

Three ways to the top-1 answer, same model, same inputs, one thread:

* ``naive_exact`` — one item at a time, ``generate`` with ``prefix_allowed_tokens_fn`` over the
  item's candidate trie and one beam per candidate (exhaustive, ``length_penalty=0``): the
  exact top-1 (and top-k), i.e. **the same answer** as the likelihood path — the naive way to
  the same result, and the comparison the ≥ 10× target is about;
* ``naive_greedy`` — the same, greedy (one beam): cheaper, but not always the most likely
  candidate (``same_top1_as_naive_greedy`` says how often it agrees);
* ``likelihood`` — ``ClusterPredictor.predict(..., candidates=...)`` in batches: exact.

Timing on a 2-core machine shared with other jobs: every path runs once per repetition,
interleaved (likelihood, greedy, exact, likelihood, ...), each timed by this process's CPU
time (``time.process_time``, one thread: what the path costs, whatever else runs) and by wall
time; the figures are medians over repetitions, speedups are ratios of CPU-time medians. The
image cache is cleared before every timed run (every path renders its images).

``breakdown_ms_per_item`` splits the likelihood path (processor + images, the vision tower,
the prompt forward incl. the vision tower, the candidates' trie forward) and the greedy one
(its batch-1 prompt forward, the rest of ``generate``): the prompt forward, which any path
pays once per item, bounds the speedup over greedy (``greedy_speedup_bound``).

Peak memory: each path runs in a fresh subprocess on the same inputs (one full batch for the
likelihood path, two items for the per-item paths); the peak RSS (VmHWM) is reset after
loading (weights paged in), so ``loaded_mb`` is the resident size with the model loaded,
``peak_mb`` the peak while
the path ran and ``path_mb`` their difference — one path's or the loader's peak never hides
another's.

Models: the tiny default of the scoring fixture and, when it can be built or found (the
``SERENDIP_BASE_DIR`` directory, else ``~/.cache/serendip/base``, built there once by
``serendip base build --out``), the pretrained base (EfficientNet-Lite0 + SmolLM2-135M) with the
same candidates — untrained for this task, which changes answers, not speed or agreement.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from serendip.data.io import read_table
from serendip.mllm.data import collate_generate
from serendip.mllm.inference import ClusterPredictor
from serendip.mllm.trie import candidate_trie
from serendip.prompts import PromptConfig, build_prompt
from serendip.scoring.inputs import predictor_inputs
from serendip.testing.scoring import ScoringFixtureConfig, build_scoring_workdir

PATHS = ("likelihood", "naive_greedy", "naive_exact")


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


def likelihood(p: ClusterPredictor, inputs: list[dict], cands: list[list[str]]) -> list[str]:
    return [r[0].cluster_id for r in p.predict(inputs, k=1, candidates=cands)]


def _timed(p: ClusterPredictor, fn, *args):
    p.encoder._images.clear()                      # every path renders its own images
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - c0, time.perf_counter() - w0


def breakdown(p: ClusterPredictor, inputs: list[dict], cands: list[list[str]]) -> dict:
    """ms per item of the likelihood path's parts and of the greedy path's prompt forward."""
    from serendip.mllm.likelihood import _encode_prompts, _mrope_owner, _packed, _tree_scores

    index = {c: j for j, c in enumerate(p.cluster_ids)}
    bs, n = p.batch_size, len(inputs)
    t = dict.fromkeys(("encode", "vision", "prompt", "candidates", "greedy_prompt_b1"), 0.0)
    prompts = [build_prompt(p.prompt_config, x["title"], x["context_description"])
               for x in inputs]
    images = [p._images_for(x, i) for i, x in enumerate(inputs)]
    p.encoder._images.clear()
    vision = getattr(getattr(p.model, "model", None), "get_image_features", None)
    with torch.inference_mode():
        for s in range(0, n, bs):
            c0 = time.process_time()
            batch = p.encoder.encode_batch(prompts[s:s + bs], images[s:s + bs])
            ins = collate_generate(batch, p.pad_id, [p.marker] * len(batch))
            c1 = time.process_time()
            if vision is not None and "pixel_values" in ins:
                vision(pixel_values=ins["pixel_values"])
            c2 = time.process_time()
            _, cache, mask = _encode_prompts(p.model, ins, _mrope_owner(p.model), True, p.pad_id)
            c3 = time.process_time()
            seqs = tuple(tuple(c) for c in p._candidate_ids)
            tries = [_packed(tuple(seqs[index[c]] for c in row)) for row in cands[s:s + bs]]
            _tree_scores(p.model, cache, tries, mask, None, p.pad_id)
            c4 = time.process_time()
            for enc in batch:
                p.model(**collate_generate([enc], p.pad_id, [p.marker]), use_cache=True,
                        logits_to_keep=1)
            c5 = time.process_time()
            for key, a, b in (("encode", c0, c1), ("vision", c1, c2), ("prompt", c2, c3),
                              ("candidates", c3, c4), ("greedy_prompt_b1", c4, c5)):
                t[key] += b - a
    return {k: round(v * 1000 / n, 2) for k, v in t.items()}


def compare(p: ClusterPredictor, inputs: list[dict], cands: list[list[str]], batch_size: int,
            naive_items: int, exact_items: int, reps: int) -> dict:
    p.batch_size = batch_size
    likelihood(p, inputs[:2], cands[:2])                           # warm-up (lazy init)
    naive(p, inputs[:1], cands[:1], False)
    m, me = min(naive_items, len(inputs)), min(exact_items, len(inputs))
    runs = {
        "likelihood": (len(inputs), lambda: likelihood(p, inputs, cands)),
        "naive_greedy": (m, lambda: naive(p, inputs[:m], cands[:m], False)),
        "naive_exact": (me, lambda: naive(p, inputs[:me], cands[:me], True)),
    }
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    wall: dict[str, list[float]] = {k: [] for k in runs}
    top: dict[str, list[str]] = {}
    for _ in range(reps):                                          # interleaved repetitions
        for name, (count, fn) in runs.items():
            top[name], c, w = _timed(p, fn)
            cpu[name].append(count / c)
            wall[name].append(count / w)
    res: dict = {"items": len(inputs), "candidates_per_item": round(
        sum(map(len, cands)) / len(cands), 2), "batch_size": batch_size, "repetitions": reps}
    for name, (count, _) in runs.items():
        res[f"{name}_items"] = count
        res[f"{name}_items_per_cpu_s"] = round(statistics.median(cpu[name]), 3)
        res[f"{name}_items_per_wall_s"] = round(statistics.median(wall[name]), 3)
    lik = top["likelihood"]
    for name in ("naive_exact", "naive_greedy"):
        res[f"speedup_vs_{name}"] = round(res["likelihood_items_per_cpu_s"]
                                          / res[f"{name}_items_per_cpu_s"], 2)
        res[f"speedup_vs_{name}_wall"] = round(res["likelihood_items_per_wall_s"]
                                               / res[f"{name}_items_per_wall_s"], 2)
        n = runs[name][0]
        res[f"same_top1_as_{name}"] = round(sum(a == b for a, b in zip(lik, top[name])) / n, 4)
    b = breakdown(p, inputs, cands)
    greedy_ms = 1000 / res["naive_greedy_items_per_cpu_s"]
    b["greedy_rest_of_generate"] = round(greedy_ms - b["greedy_prompt_b1"] - b["encode"], 2)
    res["breakdown_ms_per_item"] = b
    # even with free candidates, greedy pays the same encode + prompt forward once per item
    res["greedy_speedup_bound"] = round(greedy_ms / (b["encode"] + b["prompt"]), 2)
    # all candidates of the level, for scale (the trie-free exact ranking of every cluster)
    _, c, _ = _timed(p, lambda: p.predict(inputs[:m], k=3, candidates=[p.cluster_ids] * m))
    res["likelihood_all_clusters_items_per_cpu_s"] = round(m / c, 3)
    res["clusters_at_level"] = len(p.cluster_ids)
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


def _setup(base: Path, model_dir: Path, n: int, kind: str, base_dir: str | None):
    """(predictor, inputs, candidates) of the first ``n`` promptable items."""
    items = read_table(base, "items")
    clusters, ic = read_table(base, "clusters"), read_table(base, "item_clusters")
    p = ClusterPredictor.load(model_dir)
    inputs, _, _ = predictor_inputs(items, ic, clusters, p.level, p.prompt_config.uses_images)
    keep = [(x, r) for x, r in zip(inputs, items.to_pylist()) if x is not None][:n]
    cands = sibling_candidates(clusters, ic, [r for _, r in keep], p.level)
    if kind == "pretrained":
        from serendip.mllm.loading import load_base

        model, processor = load_base(base_dir)
        p = ClusterPredictor(model, processor, p.cluster_ids, p.descriptions,
                             PromptConfig(**vars(p.prompt_config)), p.level)
    return p, [x for x, _ in keep], cands


def peak_memory(base: Path, model_dir: Path, kind: str, batch_size: int,
                base_dir: str | None) -> dict:
    """Per path: RSS after loading and peak RSS, each path in a fresh subprocess (one full
    batch for the likelihood path; two items for the per-item paths)."""
    out = {}
    root = Path(__file__).resolve().parents[1]
    for path in PATHS:
        n = batch_size if path == "likelihood" else 2
        cmd = [sys.executable, "-m", "benchmarks.bench_likelihood", "--peak", kind, path,
               str(base), str(model_dir), str(n), str(batch_size), base_dir or ""]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            out[path] = f"failed: {r.stderr.strip().splitlines()[-1:]}"
            continue
        out[path] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def _hwm_mb() -> float:
    """Peak resident set size since the last reset (VmHWM), MB; ru_maxrss where /proc lacks it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return peak_rss_mb()


def _reset_hwm() -> bool:
    """Reset the peak RSS to the current RSS (Linux: ``5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_worker(kind: str, path: str, base: str, model_dir: str, n: str, batch_size: str,
                 base_dir: str) -> None:
    import gc

    torch.set_num_threads(1)
    p, inputs, cands = _setup(Path(base), Path(model_dir), int(n), kind, base_dir or None)
    p.batch_size = int(batch_size)
    with torch.inference_mode():          # page in the (memory-mapped) weights first
        for q in p.model.parameters():
            q.sum()
    gc.collect()
    reset = _reset_hwm()                      # loading's own peak does not hide the path's
    loaded = _hwm_mb()
    if path == "likelihood":
        likelihood(p, inputs, cands)
    else:
        naive(p, inputs, cands, path == "naive_exact")
    peak = _hwm_mb()
    print(json.dumps({"items": len(inputs), "loaded_mb": loaded, "peak_mb": peak,
                      "path_mb": round(peak - loaded, 1), "peak_reset_after_load": reset}))


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    fixture = ScoringFixtureConfig(items=600 if quick else 2000, users=200 if quick else 500,
                                   interactions=8000 if quick else 20000, seed=7,
                                   branching=(2, 2, 3, 2) if quick else (4, 3, 4, 2))
    tmp = Path(tempfile.mkdtemp(prefix="bench-likelihood-"))
    try:
        base, model_dir = build_scoring_workdir(tmp / "wd", fixture)
        n = 64 if quick else 192
        p, sample, cands = _setup(base, model_dir, n, "tiny", None)
        out: dict = {"threads": 1, "prompt": p.prompt_config.strategy,
                     "frames": p.prompt_config.n_frames,
                     "target": ">= 10x vs naive_exact (per-item generate with the same top-1), "
                               "CPU time"}
        out["tiny"] = compare(p, sample, cands, batch_size=32, naive_items=n, exact_items=n,
                              reps=2 if quick else 3)
        out["tiny"]["params"] = sum(q.numel() for q in p.model.parameters())
        out["tiny"]["peak_rss_mb"] = peak_memory(base, model_dir, "tiny", 32, None)

        d = pretrained_dir(build=not quick)
        if d is None:
            out["pretrained"] = "skipped: no built base (serendip base build --out DIR)"
            return out
        m = 8 if quick else 32                       # likelihood; greedy m/2, exact 8
        t0 = time.perf_counter()
        big, sample, cands = _setup(base, model_dir, m, "pretrained", str(d))
        load_s = round(time.perf_counter() - t0, 2)
        out["pretrained"] = compare(big, sample, cands, batch_size=16,
                                    naive_items=m // 2, exact_items=4 if quick else 8,
                                    reps=1 if quick else 3)
        out["pretrained"].update(params=sum(q.numel() for q in big.model.parameters()),
                                 load_s=load_s, base_dir=str(d))
        out["pretrained"]["peak_rss_mb"] = peak_memory(base, model_dir, "pretrained", 16,
                                                       str(d))
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__" and len(sys.argv) == 9 and sys.argv[1] == "--peak":
    _peak_worker(*sys.argv[2:])
