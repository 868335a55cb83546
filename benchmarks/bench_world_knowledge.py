"""What world knowledge buys (issue 16; target of issue 15): the tiny random-init VLM against
the pretrained base (EfficientNet-Lite0 + SmolLM2-135M-Instruct, ``serendip base build``),
fine-tuned under **the same compute budget**, three seeds each, on two data sets:

* ``ml100k`` — MovieLens-100k (``serendip import recbole``; ``SERENDIP_ML100K``, default
  ``/work/shared/data/ml-100k``), text strategy (titles), tree ``auto``, δ = 2 (as
  ``serendip demo --data``).
* ``synth`` — the synthetic platform at the demo's ``small`` size (600 items, 2/2/3/2 tree,
  traffic_power 0.5, δ = 2), multimodal, chain of thought on one frame (one frame: the
  pretrained tower turns each image into 49 tokens, and four would leave it a handful of steps).

Per data set, cluster → curate run once (the same stage entries as the CLI); then per model ×
seed ``finetune_stage`` trains until ``FinetuneConfig.time_budget_s`` CPU seconds
(``time.process_time`` of the training process, all threads; held-out evaluations and
checkpoints are not counted) — CPU time, not wall time, because this machine is shared
(8 helpers on 2 cores) and wall time measures the neighbours. Wall time is recorded too.
``steps`` is set from a 4-step calibration so the warmup-cosine schedule ends near the budget;
the budget stops training either way. Held-out recall and match rate (free and trie-
constrained, on at most 48 evenly spaced curated test examples) are evaluated at three points
along the way and where the budget stops training.

Baselines (``serendip.evaluation.baselines``, training logs only): a random serendipitous
sibling and the transition statistics of the context's cluster. The retriever-ranked baseline
is left out: the stored retriever would be trained on every transition, the held-out ones
included, and retraining it on the training split alone is not cheap here. The final model of
every run ranks each held-out context's candidates (likelihood over the siblings) and is
compared with the best baseline on **all** serendipitous pairs of held-out context items —
a seeded sample of at most 100 held-out contexts, the same for every method, model and seed
(the pretrained base ranks about one context per CPU second) — satisfaction-weighted, with a
paired bootstrap over context items: the 95% interval of MLLM − best baseline per seed. The
baselines are also given on the curated test split (the examples the curve's recall uses).

Writes ``benchmarks/results/world_knowledge.json`` and ``world_knowledge.png`` (recall vs
training CPU seconds per model, baselines as horizontal lines). ``--quick``: the committed
ml-100k subset and a tiny synthetic platform, one seed, a few CPU seconds per run.

Run: ``OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python -m benchmarks.bench_world_knowledge``
(``--data ml100k`` / ``--data synth`` run one data set into a partial file; ``--merge`` joins
the partials into the result and the plot).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SUBSET = HERE.parent / "tests" / "data" / "ml-100k-subset"
DATASETS = ("ml100k", "synth")
MODELS = ("tiny", "pretrained")


# ------------------------------------------------------------------ data (once per data set)
def prepare_base(wd: Path, quick: bool, data: str = "ml100k") -> dict:
    """Import ml-100k and cluster it (tree ``auto``) once; or the synthetic platform at the
    demo's ``small`` size (2/2/3/2 tree, traffic_power 0.5); ``synth_large``: 2,400 items."""
    from serendip.tree import ClusterConfig, cluster_stage

    wd.mkdir(parents=True, exist_ok=True)
    if data in ("synth", "synth_large"):
        from serendip.data.synth import SynthConfig, write_synth

        size = (dict(items=300, users=100, interactions=3000) if quick
                else dict(items=2400, users=800, interactions=32000) if data == "synth_large"
                else dict(items=600, users=200, interactions=8000))
        write_synth(SynthConfig(**size, seed=7, branching=(2, 2, 3, 2)), wd, with_ceiling=False)
        cluster_stage(wd, wd, ClusterConfig(branching=(2, 2, 3, 2), traffic_power=0.5))
        return {"source": "serendip synth", "synth": {**size, "branching": [2, 2, 3, 2]}}
    from serendip.data.recbole import import_recbole

    src = SUBSET if quick else Path(os.environ.get("SERENDIP_ML100K",
                                                   "/work/shared/data/ml-100k"))
    info = {"source": str(src), "import": import_recbole(src, wd)}
    cluster_stage(wd, wd, ClusterConfig())
    return info


def data_prompt(data: str):
    """The prompt each data set is curated with: chain of thought on one frame for the
    synthetic platform, the text prompt (titles) for ml-100k."""
    from serendip.prompts import PromptConfig

    return PromptConfig("cot", 1) if data.startswith("synth") else PromptConfig("text")


def prepare(name: str, wd: Path, quick: bool) -> dict:
    """Import or generate, cluster (:func:`prepare_base`), curate into ``wd``; returns what
    was built and its cost."""
    from serendip.curation import CurationConfig, curate_stage

    t0, c0 = time.perf_counter(), time.process_time()
    info = prepare_base(wd, quick, name)
    prompt = data_prompt(name)
    res = curate_stage(wd, wd, CurationConfig(delta=2, prompt=prompt))
    split = res.examples.column("split").to_pylist()
    info.update(prompt={"strategy": prompt.strategy, "n_frames": prompt.n_frames},
                level=3, delta=2, train_examples=split.count("train"),
                test_examples=split.count("test"),
                prepare_wall_s=round(time.perf_counter() - t0, 1),
                prepare_cpu_s=round(time.process_time() - c0, 1))
    return info


def choice_eval(wd: Path, predictor=None, max_contexts: int = 100) -> dict:
    """The choice baselines (and the model's candidate ranking, if given) on all serendipitous
    pairs of held-out context items — at most ``max_contexts`` of them, the same seeded sample
    for every method and model (the pretrained base ranks ~1 context/s on one thread) — and,
    without a model, on the curated test split. Training transitions are never subsampled."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from serendip.candidates import CandidateIndex
    from serendip.curation import read_curation
    from serendip.data.io import read_table
    from serendip.evaluation.baselines import evaluate_baselines, split_transitions
    from serendip.evaluation.rankings import mllm_cluster_rankings

    cur = read_curation(wd)
    level, delta, tf, seed = cur.level, cur.delta, cur.test_fraction, cur.seed
    items = read_table(wd, "items", columns=["item_id"])
    inter = read_table(wd, "interactions", refs={"items": items})
    ic, cl = read_table(wd, "item_clusters"), read_table(wd, "clusters")
    _, _, held_ctx = split_transitions(inter, tf, seed)
    held = sorted(held_ctx)
    if len(held) > max_contexts:
        rng = np.random.default_rng(0)
        keep = sorted(rng.choice(held, max_contexts, replace=False).tolist())
        drop = pa.array(sorted(set(held) - set(keep)), pa.string())
        inter = inter.filter(pc.invert(pc.is_in(inter.column("context_item_id"),
                                                value_set=drop)))
        held = keep
    rankings, stats = None, None
    if predictor is not None:
        index = CandidateIndex.build(ic, cl, level, delta)
        rankings, stats = mllm_cluster_rankings(wd, held, index, predictor, 10,
                                                use_scored=False)
    curated = pq.read_table(wd / "curated_pairs.parquet") if predictor is None else None
    rep = evaluate_baselines(inter, ic, cl, level, delta, tf, seed, None, curated, rankings,
                             (1, 5), 1000)
    out = {_key(cs["cases"]): _case_set(cs) for cs in rep["case_sets"]}
    out["heldout_contexts_used"] = len(held)
    out["heldout_contexts_total"] = len(held_ctx)
    if stats is not None:
        out["model_rankings"] = stats
    return out


def _key(cases_name: str) -> str:
    return "curated_test" if cases_name.startswith("curated") else "all_heldout_pairs"


def _case_set(cs: dict) -> dict:
    out = {"cases": cs["cases"], "n_cases": cs["n_cases"], "n_contexts": cs["n_contexts"],
           "weighted": cs["weighted"],
           "best_baseline": cs["best_baseline"],
           "mean_candidates": round(cs["mean_candidates"], 2), "methods": {}}
    for m, r in cs["methods"].items():
        row = {k: {"value": round(v["value"], 4), "ci95": [round(x, 4) for x in v["ci95"]]}
               for k, v in r.items()}
        if "diff" in r["recall"]:
            row["recall"]["diff_vs_best"] = round(r["recall"]["diff"], 4)
            row["recall"]["diff_ci95"] = [round(x, 4) for x in r["recall"]["diff_ci95"]]
        out["methods"][m] = row
    return out


# ------------------------------------------------------------------ models
def base_dir() -> Path:
    from serendip.mllm.base import build_base

    base = Path(os.environ.get("SERENDIP_BASE_DIR")
                or Path.home() / ".cache" / "serendip" / "base")
    build_base(base, progress=False)            # a no-op when built (cached by versions)
    return base


def config(model: str, seed: int, **kw):
    """Each model with its own training recipe: the tiny default (full, batch 32, lr 1e-3),
    the pretrained base with LoRA q/k/v/o + lm_head + projector (bench_pretrained), batch 8,
    lr 3e-4 (the usual LoRA range; batch 8 gives it more than a handful of steps)."""
    from serendip.mllm.config import FinetuneConfig

    if model == "tiny":
        return FinetuneConfig(seed=seed, **kw)
    return FinetuneConfig(**{"base_model": str(base_dir()), "method": "lora", "batch_size": 8,
                             "lr": 3e-4, "warmup_steps": 5, "seed": seed, **kw})


def calibrate(wd: Path, model: str, out: Path) -> float:
    """CPU seconds per training step: a 4-step fine-tune (first step included)."""
    from serendip.mllm.stage import finetune_stage

    cfg = config(model, 0, steps=4, warmup_steps=1, eval_every=4, save_every=4,
                 eval_max_examples=1, eval_batch_size=1)
    finetune_stage(wd, out, cfg, resume=False, progress=False)
    hist = json.loads((out / "history.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.parent / f".{out.name}.work", ignore_errors=True)
    return hist[-1]["train_cpu_s"] / 4


def train_and_evaluate(wd: Path, model: str, seed: int, budget_s: float, s_per_step: float,
                       out: Path, n_points: int = 3, eval_examples: int = 48) -> dict:
    """One fine-tune under the budget, its curve, and its final model against the baselines."""
    from serendip.mllm.inference import ClusterPredictor
    from serendip.mllm.stage import finetune_stage

    steps = max(8, math.ceil(budget_s / s_per_step))
    cfg = config(model, seed, steps=steps, eval_every=max(1, steps // n_points),
                 save_every=steps, keep_checkpoints=1, eval_max_examples=eval_examples,
                 time_budget_s=budget_s)
    t0, c0 = time.perf_counter(), time.process_time()
    s = finetune_stage(wd, out, cfg, resume=False, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    hist = json.loads((out / "history.json").read_text())
    last = hist[-1]
    pred = ClusterPredictor.load(out, base_dir=str(wd))
    t1 = time.perf_counter()
    choice = choice_eval(wd, pred)
    row = {"seed": seed, "method": s["method"], "trainable_params": s["trainable_params"],
           "total_params": s["total_params"], "steps_planned": steps, "steps_done": last["step"],
           "batch_size": cfg.batch_size, "lr": cfg.lr,
           "train_cpu_s": last["train_cpu_s"], "finetune_wall_s": round(wall, 1),
           "finetune_cpu_s_with_evals": round(cpu, 1),
           "steps_per_cpu_s": round(last["step"] / max(last["train_cpu_s"], 1e-9), 4),
           "final": {k: last[k] for k in ("match_rate", "recall", "match_rate_constrained",
                                          "recall_constrained", "n") if k in last},
           "curve": [{k: h.get(k) for k in ("step", "train_cpu_s", "elapsed_s", "train_loss",
                                           "recall", "recall_constrained", "match_rate",
                                           "match_rate_constrained")} for h in hist],
           "choice": {"all_heldout_pairs": choice["all_heldout_pairs"]},
           "model_rankings": choice.get("model_rankings"),
           "choice_eval_wall_s": round(time.perf_counter() - t1, 1)}
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(out.parent / f".{out.name}.work", ignore_errors=True)
    return row


# ------------------------------------------------------------------ one data set
def run_dataset(name: str, quick: bool, seeds, budget_s: float, root: Path,
                partial: Path | None = None, models=MODELS) -> dict:
    import torch

    torch.set_num_threads(1)
    wd = root / name
    res: dict = {"data": name, "budget_cpu_s": budget_s, "seeds": list(seeds)}
    res["prepared"] = prepare(name, wd, quick)
    res["baselines"] = choice_eval(wd)
    res["calibration_cpu_s_per_step"] = {}
    res["runs"] = {m: [] for m in models}
    for m in models:
        res["calibration_cpu_s_per_step"][m] = round(calibrate(wd, m, root / f"cal-{m}"), 3)
        _save_partial(partial, res)
    for seed in seeds:                       # seed-major: a cut-short run stays balanced
        for m in models:
            print(f"[{time.strftime('%H:%M:%S')}] {name} {m} seed {seed}", flush=True)
            res["runs"][m].append(train_and_evaluate(
                wd, m, seed, budget_s, res["calibration_cpu_s_per_step"][m],
                root / f"{m}-s{seed}"))
            res["summary"] = summarize(res)
            _save_partial(partial, res)
    return res


def _save_partial(path: Path | None, res: dict) -> None:
    if path is None:
        return
    from serendip.data.io import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(res, indent=2).encode())


def write_results(name: str, res: dict, md: str, partial: Path | None = None) -> None:
    """``RESULTS/<name>.json`` and ``.md`` (atomically); the partial file removed; the
    markdown printed."""
    from serendip.data.io import atomic_write_bytes

    atomic_write_bytes(RESULTS / f"{name}.json", json.dumps(res, indent=2).encode())
    atomic_write_bytes(RESULTS / f"{name}.md", md.encode())
    if partial is not None:
        partial.unlink(missing_ok=True)
    print(md)


# ------------------------------------------------------------------ summary, plot
def _ms(xs) -> dict:
    a = np.asarray([x for x in xs if x is not None], dtype=float)
    if a.size == 0:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": round(float(a.mean()), 4),
            "sd": round(float(a.std(ddof=1)), 4) if a.size > 1 else 0.0, "n": int(a.size)}


def summarize(res: dict) -> dict:
    out = {}
    for m, runs in res["runs"].items():
        if not runs:
            continue
        row = {k: _ms(r["final"].get(k) for r in runs)
               for k in ("recall", "recall_constrained", "match_rate", "match_rate_constrained")}
        row["train_cpu_s"] = _ms(r["train_cpu_s"] for r in runs)
        row["finetune_wall_s"] = _ms(r["finetune_wall_s"] for r in runs)
        row["steps_done"] = _ms(r["steps_done"] for r in runs)
        row["steps_per_cpu_s"] = _ms(r["steps_per_cpu_s"] for r in runs)
        for cases in runs[0]["choice"]:
            mm = [r["choice"][cases]["methods"]["model"]["recall"] for r in runs]
            row[f"choice_{cases}"] = {
                "model_recall": _ms(x["value"] for x in mm),
                "diff_vs_best": _ms(x["diff_vs_best"] for x in mm),
                "per_seed_diff_ci95": [x["diff_ci95"] for x in mm],
                "best_baseline": runs[0]["choice"][cases]["best_baseline"],
                "above_best_all_seeds": all(x["diff_ci95"][0] > 0 for x in mm)}
        out[m] = row
    return out


def plot(result: dict, path: Path) -> None:
    """Top: the held-out curve (curated test examples) vs training CPU seconds; bottom: each
    final model on all held-out pairs (95% interval) at the CPU seconds it used. Baselines
    are horizontal lines (bottom: with their intervals). Extra runs (``--tag``) dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [d for d in DATASETS if d in result["datasets"]]
    fig, axes = plt.subplots(2, len(names), figsize=(6.5 * len(names), 8), squeeze=False)
    colours = {"tiny": "tab:blue", "pretrained": "tab:red"}
    for j, name in enumerate(names):
        d = result["datasets"][name]
        groups = [(d, "-", "o", "")] + [
            (e, "--", "s", f", {e['budget_cpu_s']:.0f} s budget")
            for k, e in (result.get("extra_runs") or {}).items() if k.split("-")[0] == name]
        top, bottom = axes[0][j], axes[1][j]
        for g, ls, mk, extra in groups:
            for m, runs in g["runs"].items():
                for i, r in enumerate(runs):
                    lab = f"{m} ({len(runs)} seed{'s' if len(runs) > 1 else ''}{extra})"
                    top.plot([h["train_cpu_s"] for h in r["curve"]],
                             [h["recall_constrained"] for h in r["curve"]], ls, marker=mk,
                             color=colours[m], alpha=0.75, lw=1.2, ms=4,
                             label=lab if i == 0 else None)
                    rec = r["choice"]["all_heldout_pairs"]["methods"]["model"]["recall"]
                    bottom.errorbar([r["train_cpu_s"]], [rec["value"]], fmt=mk,
                                    yerr=[[rec["value"] - rec["ci95"][0]],
                                          [rec["ci95"][1] - rec["value"]]],
                                    color=colours[m], alpha=0.8, capsize=3,
                                    label=lab if i == 0 else None)
        for ax, key in ((top, "curated_test"), (bottom, "all_heldout_pairs")):
            cs = d["baselines"][key]
            for b, style in (("random_sibling", ":"), ("transition", "--")):
                r = cs["methods"][b]["recall"]
                ax.axhline(r["value"], color="k", ls=style, lw=1, label=f"{b} baseline")
                if key == "all_heldout_pairs" and r["ci95"][1] > r["ci95"][0]:
                    ax.axhspan(r["ci95"][0], r["ci95"][1], color="k", alpha=0.07)
            ax.axvline(d["budget_cpu_s"], color="grey", lw=0.8, alpha=0.5)
            ax.set_xlabel("training CPU seconds (time.process_time, one thread)")
            ax.set_xlim(left=0)
            ax.legend(fontsize=7)
        p = d["prepared"]["prompt"]
        top.set_title(f"{name} ({p['strategy']}): curve on ≤48 of "
                      f"{d['prepared']['test_examples']} curated test examples", fontsize=10)
        top.set_ylabel("recall (trie-constrained, top-1)")
        a = d["baselines"]["all_heldout_pairs"]
        bottom.set_title(f"{name}: final model, all held-out pairs ({a['n_cases']} cases, "
                         f"{a['n_contexts']} contexts), 95% CI", fontsize=10)
        bottom.set_ylabel("recall over the candidates (weighted)")
        top.set_ylim(0, 1)
        bottom.set_ylim(0, max(0.6, bottom.get_ylim()[1]))
    fig.suptitle("What world knowledge buys: tiny vs pretrained VLM under the same CPU budget")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _f(ms: dict, nd: int = 3) -> str:
    if ms.get("mean") is None:
        return "—"
    return f"{ms['mean']:.{nd}f} ± {ms['sd']:.{nd}f}"


def markdown(result: dict) -> str:
    """The tiny-vs-pretrained table (README "What world knowledge buys")."""
    lines = ["| data set | model | seeds | steps (batch) | train CPU s | wall s | recall "
             "(trie, curated test) | match rate free / trie | recall, all held-out pairs | "
             "− best baseline [95% CI per seed] |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, d in result["datasets"].items():
        for m, sm in d.get("summary", {}).items():
            runs = d["runs"][m]
            ch = sm["choice_all_heldout_pairs"]
            cis = " ".join(f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in ch["per_seed_diff_ci95"])
            lines.append(
                f"| {name} | {m} | {sm['recall']['n']} | {sm['steps_done']['mean']:.0f} "
                f"({runs[0]['batch_size']}) | {sm['train_cpu_s']['mean']:.0f} | "
                f"{sm['finetune_wall_s']['mean']:.0f} | {_f(sm['recall_constrained'])} | "
                f"{_f(sm['match_rate'], 2)} / {_f(sm['match_rate_constrained'], 2)} | "
                f"{_f(ch['model_recall'])} | {ch['diff_vs_best']['mean']:+.3f} {cis} |")
    lines += ["", "| data set | cases (all held-out pairs: cases / contexts) | random sibling "
              "| transition | curated test: random sibling | transition |", "|---|---|---|---|---|---|"]
    for name, d in result["datasets"].items():
        a, c = d["baselines"]["all_heldout_pairs"], d["baselines"]["curated_test"]

        def v(cs, m):
            r = cs["methods"][m]["recall"]
            return f"{r['value']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
        lines.append(f"| {name} | {a['n_cases']} / {a['n_contexts']} (of "
                     f"{d['baselines']['heldout_contexts_total']} held-out contexts, "
                     f"{d['baselines']['heldout_contexts_used']} sampled) | "
                     f"{v(a, 'random_sibling')} | {v(a, 'transition')} | "
                     f"{v(c, 'random_sibling')} | {v(c, 'transition')} |")
    return "\n".join(lines) + "\n"


def merge(parts: dict, quick: bool, extra: dict | None = None) -> dict:
    result = {"note": __doc__.split("\n\n")[0].replace("\n", " "),
              "budget": "time_budget_s: CPU seconds (time.process_time of the training "
                        "process, all threads, OMP_NUM_THREADS=1) spent in training steps; "
                        "held-out evaluations and checkpoints not counted; wall time recorded "
                        "beside it (shared 2-core machine, nice -n 5)",
              "quick": quick, "datasets": parts, "extra_runs": extra or {}}
    RESULTS.mkdir(exist_ok=True)
    plot(result, RESULTS / ("world_knowledge_quick.png" if quick else "world_knowledge.png"))
    from serendip.data.io import atomic_write_bytes

    atomic_write_bytes(RESULTS / ("world_knowledge_quick.md" if quick else "world_knowledge.md"),
                       markdown(result).encode())
    return result


def run(quick: bool = False, datasets=DATASETS, seeds=None, budget_s: float | None = None
        ) -> dict:
    """Every data set in turn (``make bench`` / benchmarks/run.py)."""
    seeds = seeds if seeds is not None else ((0,) if quick else (0, 1, 2))
    budget_s = budget_s if budget_s is not None else (8.0 if quick else 120.0)
    root = Path(tempfile.mkdtemp(prefix="bench-world-knowledge-"))
    try:
        parts = {d: run_dataset(d, quick, seeds, budget_s, root) for d in datasets}
        return merge(parts, quick)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=DATASETS, help="one data set into a partial file")
    ap.add_argument("--merge", action="store_true", help="join the partial files")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--budget-s", type=float, help="CPU seconds per run (default 120; quick 8)")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated (with --data)")
    ap.add_argument("--tag", default="", help="with --data: a separate partial file "
                    "(e.g. a longer budget for one model), merged under 'extra_runs'")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    suffix = "_quick" if a.quick else ""
    partial = {d: RESULTS / f"world_knowledge{suffix}.{d}.partial.json" for d in DATASETS}
    tagged = RESULTS / f"world_knowledge{suffix}.{a.data}-{a.tag}.partial.json"
    seeds = tuple(range(a.seeds)) if a.seeds else ((0,) if a.quick else (0, 1, 2))
    budget = a.budget_s or (8.0 if a.quick else 120.0)
    if a.data:
        root = Path(tempfile.mkdtemp(prefix=f"bench-wk-{a.data}-"))
        try:
            models = tuple(m for m in a.models.split(",") if m)
            if set(models) - set(MODELS):
                ap.error(f"--models: use some of {', '.join(MODELS)}")
            run_dataset(a.data, a.quick, seeds, budget, root,
                        tagged if a.tag else partial[a.data], models)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return 0
    if a.merge:
        parts = {d: json.loads(p.read_text()) for d, p in partial.items() if p.exists()}
        extra = {p.name.split(".")[1]: json.loads(p.read_text()) for p in sorted(
            RESULTS.glob(f"world_knowledge{suffix}.*-*.partial.json"))}
    else:
        return _write(run(a.quick, seeds=seeds, budget_s=budget), a.quick)
    return _write(merge(parts, a.quick, extra), a.quick)


def _write(result: dict, quick: bool) -> int:
    from serendip.data.io import atomic_write_bytes

    name = "world_knowledge_quick.json" if quick else "world_knowledge.json"
    atomic_write_bytes(RESULTS / name, json.dumps(result, indent=2).encode())
    print(json.dumps({d: v.get("summary") for d, v in result["datasets"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
