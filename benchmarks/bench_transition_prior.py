"""Does the transition prior (logit adjustment, :mod:`serendip.transitions`) let the fine-tuned
MLLM beat the best cluster-choice baseline on all serendipitous pairs of held-out context items
(issue 15)?

The paper's curation keeps the top 10 context items of every next-item cluster, so the model
learns a uniform prior over target clusters; the logged transition statistics (the best
baseline) know where users of a cluster actually go. The model's ranking is
``log p_model + τ · log π(cluster | context's cluster)`` with ``τ`` = ``prior_weight``; τ = 0 is
the model alone, τ = 1 Bayes' rule (the default), larger τ trusts the prior more.

Per data set (ml-100k: text prompt; the synthetic platform: chain of thought on one frame — as
``bench_curation_size``, whose ``prepare_base`` / ``curate_top_k`` this reuses), ``top_k`` (10:
the paper's; 100000: every serendipitous (context, cluster) pair) and seed: the tiny model
trains for ``--budget-s`` CPU seconds (120), then ranks the candidates of **every** held-out
context item (no sampling) through the product's own path
(:func:`serendip.evaluation.rankings.mllm_cluster_rankings` → ``ClusterPredictor.predict``
with the curation's prior, ``evaluate_baselines``) for each τ. One trained model serves every τ
(the prior changes only the ranking). Reports recall (satisfaction-weighted), the paired
difference against the best baseline and its 95% interval (bootstrap over context items).

Writes ``benchmarks/results/transition_prior.json`` and ``.md`` (other ``--data`` choices:
``transition_prior_<data>.{json,md}``).
Run: ``OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python -m benchmarks.bench_transition_prior``
(``--data ml100k,synth --top-k 10,100000 --seeds 3 --weights 0,1,4 --root DIR``; trained
models and prepared data under ``--root`` are reused, so a cut-short run resumes).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from benchmarks.bench_world_knowledge import RESULTS, _ms, _save_partial, write_results


def prepared(root: Path, data: str, top_k: int) -> Path:
    """``root/<data>/top<k>``: imported, clustered (once per data set) and curated."""
    from benchmarks.bench_curation_size import curate_top_k, prepare_base

    base = root / data / "base"
    if not (base / "done").exists():
        prepare_base(base, False, data)
        (base / "done").write_text("1")
    wd = root / data / f"top{top_k}"
    if not (wd / "curation.json").exists():
        curate_top_k(base, wd, top_k, data)
    return wd


def trained(root: Path, data: str, wd: Path, top_k: int, seed: int, budget_s: float) -> Path:
    """The tiny model of (data, top_k, seed), trained for ``budget_s`` CPU seconds."""
    from benchmarks.bench_world_knowledge import calibrate, config
    from serendip.mllm.stage import finetune_stage

    out = root / data / f"m{top_k}-s{seed}"
    if (out / "serendip.json").exists():
        return out
    spp_file = root / data / "spp"
    if not spp_file.exists():
        spp_file.write_text(str(calibrate(wd, "tiny", root / data / "cal")))
    steps = max(8, math.ceil(budget_s / float(spp_file.read_text())))
    cfg = config("tiny", seed, steps=steps, eval_every=steps, save_every=steps,
                 keep_checkpoints=1, eval_max_examples=48, time_budget_s=budget_s)
    finetune_stage(wd, out, cfg, resume=False, progress=False)
    return out


def evaluate(wd: Path, model_dir: Path, weights) -> dict:
    """τ → the model's recall on every held-out context's serendipitous pairs against the
    baselines (:func:`serendip.evaluation.baselines.baselines_stage`: the work directories
    hold no retriever, so the retriever-ranked sibling is left out), with the prior the
    curation wrote (``transition_prior.json``; a model trained before priors gets it here)."""
    from serendip.evaluation.baselines import baselines_stage
    from serendip.mllm.inference import ClusterPredictor
    from serendip.transitions import read_prior

    pred = ClusterPredictor.load(model_dir, base_dir=str(wd))
    pred.prior = pred.prior or read_prior(wd)
    if pred.prior is None:
        raise SystemExit(f"{wd} has no transition_prior.json: re-run serendip curate")
    out = {}
    for tau in weights:
        pred.prior_weight = float(tau)
        rep = baselines_stage(wd, predictor=pred, ks=(1, 5), n_boot=1000)
        cs = rep["case_sets"][0]
        out[str(tau)] = {
            "n_cases": cs["n_cases"], "n_contexts": cs["n_contexts"],
            "best_baseline": cs["best_baseline"],
            "methods": {m: {k: {kk: vv for kk, vv in v.items() if kk != "lift"}
                            for k, v in r.items()} for m, r in cs["methods"].items()},
            "top1_is_own_cluster": rep["model"]["top1_is_own_cluster"]}
    return out


def run(datas, top_ks, seeds, weights, budget_s: float, root: Path, partial: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    res: dict = {"budget_cpu_s": budget_s, "weights": list(weights), "seeds": list(seeds),
                 "runs": []}
    for seed in seeds:                      # seed-major: a cut-short run stays balanced
        for data in datas:
            for k in top_ks:
                t0 = time.perf_counter()
                wd = prepared(root, data, k)
                md = trained(root, data, wd, k, seed, budget_s)
                row = {"data": data, "top_k": k, "seed": seed,
                       "by_weight": evaluate(wd, md, weights),
                       "wall_s": round(time.perf_counter() - t0, 1)}
                res["runs"].append(row)
                res["summary"] = summarize(res)
                _save_partial(partial, res)
                for tau, r in row["by_weight"].items():
                    m = r["methods"]["model"]["recall"]
                    print(f"[{time.strftime('%H:%M:%S')}] {data} top_k={k} seed={seed} "
                          f"τ={tau}: {m['value']:.3f} − {r['best_baseline']} "
                          f"{m['diff']:+.3f} [{m['diff_ci95'][0]:+.3f}, "
                          f"{m['diff_ci95'][1]:+.3f}]", flush=True)
    return res


def summarize(res: dict) -> dict:
    out: dict = {}
    for r in res["runs"]:
        for tau, v in r["by_weight"].items():
            out.setdefault(f"{r['data']}|{r['top_k']}|{tau}", []).append(v)
    summary = {}
    for key, vs in out.items():
        data, k, tau = key.split("|")
        m = [v["methods"]["model"]["recall"] for v in vs]
        best = vs[0]["best_baseline"]
        summary[key] = {
            "data": data, "top_k": int(k), "prior_weight": float(tau), "seeds": len(vs),
            "recall": _ms(x["value"] for x in m),
            "best_baseline": best,
            "best_baseline_recall": vs[0]["methods"][best]["recall"]["value"],
            "best_baseline_ci95": vs[0]["methods"][best]["recall"]["ci95"],
            "random_sibling": vs[0]["methods"]["random_sibling"]["recall"]["value"],
            "diff_vs_best": _ms(x["diff"] for x in m),
            "per_seed_diff_ci95": [x["diff_ci95"] for x in m],
            "above_best_all_seeds": all(x["diff_ci95"][0] > 0 for x in m),
            "n_cases": vs[0]["n_cases"], "n_contexts": vs[0]["n_contexts"]}
    return summary


def markdown(res: dict) -> str:
    lines = ["| data | top_k | prior weight τ | seeds | recall | best baseline | − best "
             "[95% CI per seed] | above in every seed |", "|---|---|---|---|---|---|---|---|"]
    for s in res.get("summary", {}).values():
        cis = " ".join(f"[{a:+.3f}, {b:+.3f}]" for a, b in s["per_seed_diff_ci95"])
        r, d = s["recall"], s["diff_vs_best"]
        lo, hi = s["best_baseline_ci95"]
        lines.append(f"| {s['data']} | {s['top_k']} | {s['prior_weight']:g} | {s['seeds']} | "
                     f"{r['mean']:.3f} ± {r['sd']:.3f} | {s['best_baseline']} "
                     f"{s['best_baseline_recall']:.3f} [{lo:.3f}, {hi:.3f}] | "
                     f"{d['mean']:+.3f} {cis} | {'yes' if s['above_best_all_seeds'] else 'no'} |")
    cases = {(s["data"], s["n_cases"], s["n_contexts"], s["random_sibling"])
             for s in res.get("summary", {}).values()}
    for data, n, c, rnd in sorted(cases):
        lines.append(f"\n{data}: {n} held-out serendipitous pairs of {c} held-out context "
                     f"items (all of them, satisfaction-weighted); random sibling {rnd:.3f}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="ml100k,synth")
    ap.add_argument("--top-k", default="10,100000")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--weights", default="0,1,4", help="comma-separated prior weights τ >= 0")
    ap.add_argument("--budget-s", type=float, default=120.0)
    ap.add_argument("--root", type=Path, default=Path("/tmp/serendip-bench-prior"),
                    help="prepared data and trained models (reused when present)")
    a = ap.parse_args(argv)
    try:
        top_ks = [int(x) for x in a.top_k.split(",") if x]
        weights = [float(x) for x in a.weights.split(",") if x]
    except ValueError:
        ap.error("--top-k and --weights: comma-separated numbers, e.g. 10,100000 and 0,1,4")
    if not top_ks or min(top_ks) < 1 or not weights or min(weights) < 0:
        ap.error("--top-k: integers >= 1; --weights: numbers >= 0")
    datas = [d for d in a.data.split(",") if d]
    if not datas or set(datas) - {"ml100k", "synth", "synth_large"}:
        ap.error("--data: ml100k, synth and/or synth_large (2,400 items, 32,000 "
                 "interactions: 4x the held-out contexts)")
    name = "transition_prior" + ("" if datas == ["ml100k", "synth"] else "_" + "_".join(datas))
    partial = RESULTS / f"{name}.partial.json"
    res = run(datas, top_ks, range(a.seeds), weights, a.budget_s, a.root, partial)
    write_results(name, res, markdown(res), partial)
    return 0


if __name__ == "__main__":
    sys.exit(main())
