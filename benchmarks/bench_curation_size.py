"""Does more curated data close the gap? The tiny VLM fine-tuned on the paper's top-10 context
items per next-item cluster against the same model trained on more of them (``top_k`` 50, and
100000 = every serendipitous (context item, cluster) pair), compared with the transition
statistics (the best baseline, which uses every logged training transition) on **all**
serendipitous pairs of held-out context items — the measurement of ``bench_world_knowledge``
(issue 16, target of issue 15), whose functions this script reuses unchanged.

ml-100k (``SERENDIP_ML100K``, default ``/work/shared/data/ml-100k``), text prompt (titles), tree
``auto``, l = 3, δ = 2, imported and clustered once; then one curation per ``top_k`` (a copy of
the clustered directory each), everything else at its default (``min_interactions`` 1,
``test_fraction`` 0.2, split seed 0). Per ``top_k`` × seed: the tiny model trains until
``FinetuneConfig.time_budget_s`` CPU seconds (120, as bench_world_knowledge), ``steps`` from a
4-step calibration.

The held-out context items are the same for every ``top_k``: ``split_by_context`` hashes
(seed, context item id) on its own, so a context item's split does not depend on which others
were selected, and the baselines' ``split_transitions`` applies the same hash to every logged
context item. The script checks it: no training example's context item is a held-out context
of the evaluation, and the held-out set (and its seeded 100-context sample) is identical for
every ``top_k``.

Writes ``benchmarks/results/curation_size.json`` and ``curation_size.md``.
Run: ``OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python -m benchmarks.bench_curation_size``
(``--top-k 10,50,100000 --seeds 3 --budget-s 120``; ``--quick``: the committed ml-100k subset,
one seed, 8 CPU seconds; ``--from-partial``: the result of a cut-short run from its partial file).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_world_knowledge import (
    RESULTS,
    _ms,
    _save_partial,
    calibrate,
    data_prompt,
    prepare_base,
    train_and_evaluate,
    write_results,
)

TOP_KS = (10, 50, 100000)


def curate_top_k(base: Path, wd: Path, top_k: int, data: str = "ml100k") -> dict:
    """A copy of the clustered directory, curated with ``top_k`` (l = 3, δ = 2; text prompt on
    ml-100k, chain of thought on one frame on the synthetic platform)."""
    from serendip.curation import CurationConfig, curate_stage

    shutil.copytree(base, wd)
    prompt = data_prompt(data)
    res = curate_stage(wd, wd, CurationConfig(delta=2, top_k=top_k, prompt=prompt))
    ex = res.examples
    split = ex.column("split").to_pylist()
    ctx = ex.column("context_item_id").to_pylist()
    return {"top_k": top_k, "train_examples": split.count("train"),
            "test_examples": split.count("test"),
            "train_context_items": len({c for c, s in zip(ctx, split) if s == "train"}),
            "test_context_items": len({c for c, s in zip(ctx, split) if s == "test"}),
            "examples_per_cluster_min": res.stats["examples_per_cluster_min"],
            "examples_per_cluster_max": res.stats["examples_per_cluster_max"],
            "selected_mean_satisfaction": res.stats["selected_mean_satisfaction"],
            "_train_ctx": sorted({c for c, s in zip(ctx, split) if s == "train"})}


def heldout_check(wd: Path, train_ctx: list[str]) -> dict:
    """The evaluation's held-out context items (``split_transitions`` on every logged
    transition) and their overlap with the training examples' context items (must be 0)."""
    from serendip.curation import read_curation
    from serendip.data.io import read_table
    from serendip.evaluation.baselines import split_transitions

    cur = read_curation(wd)
    items = read_table(wd, "items", columns=["item_id"])
    inter = read_table(wd, "interactions", refs={"items": items})
    _, _, held = split_transitions(inter, cur.test_fraction, cur.seed)
    overlap = sorted(set(train_ctx) & held)
    if overlap:
        raise SystemExit(f"leak: {len(overlap)} training context items are held out, "
                         f"e.g. {overlap[:3]}")
    return {"heldout_contexts": sorted(held), "train_heldout_overlap": 0}


def run(quick: bool, top_ks, seeds, budget_s: float, root: Path, partial: Path,
        data: str = "ml100k") -> dict:
    import torch

    torch.set_num_threads(1)
    res: dict = {"data": data, "budget_cpu_s": budget_s, "seeds": list(seeds),
                 "top_k": list(top_ks), "level": 3, "delta": 2,
                 "prompt": "cot, 1 frame" if data == "synth" else "text"}
    base = root / "base"
    t0 = time.perf_counter()
    res["prepared"] = prepare_base(base, quick, data)
    res["prepared"]["prepare_wall_s"] = round(time.perf_counter() - t0, 1)
    res["curations"], held_sets, wds = {}, {}, {}
    for k in top_ks:
        wds[k] = root / f"top{k}"
        info = curate_top_k(base, wds[k], k, data)
        chk = heldout_check(wds[k], info.pop("_train_ctx"))
        held_sets[k] = chk["heldout_contexts"]
        info["train_heldout_overlap"] = chk["train_heldout_overlap"]
        info["heldout_contexts"] = len(chk["heldout_contexts"])
        res["curations"][str(k)] = info
        print(f"[{time.strftime('%H:%M:%S')}] top_k={k}: {info}", flush=True)
    same = all(held_sets[k] == held_sets[top_ks[0]] for k in top_ks)
    if not same:
        raise SystemExit("the held-out context items differ across top_k")
    res["heldout_identical_across_top_k"] = same
    res["calibration_cpu_s_per_step"] = {
        str(k): round(calibrate(wds[k], "tiny", root / f"cal-{k}"), 3) for k in top_ks}
    res["runs"] = {str(k): [] for k in top_ks}
    _save_partial(partial, res)
    for seed in seeds:                          # seed-major: a cut-short run stays balanced
        for k in top_ks:
            print(f"[{time.strftime('%H:%M:%S')}] top_k={k} seed {seed}", flush=True)
            row = train_and_evaluate(wds[k], "tiny", seed, budget_s,
                                     res["calibration_cpu_s_per_step"][str(k)],
                                     root / f"tiny-{k}-s{seed}")
            res["runs"][str(k)].append(row)
            res["summary"] = summarize(res)
            _save_partial(partial, res)
            ch = row["choice"]["all_heldout_pairs"]["methods"]["model"]["recall"]
            print(f"  recall {ch['value']:.3f} diff {ch['diff_vs_best']:+.3f} "
                  f"{ch['diff_ci95']} steps {row['steps_done']} cpu {row['train_cpu_s']}",
                  flush=True)
    return res


def summarize(res: dict) -> dict:
    out = {}
    for k, runs in res["runs"].items():
        if not runs:
            continue
        mm = [r["choice"]["all_heldout_pairs"]["methods"]["model"]["recall"] for r in runs]
        out[k] = {"seeds": len(runs),
                  "train_examples": res["curations"][k]["train_examples"],
                  "steps_done": _ms(r["steps_done"] for r in runs),
                  "train_cpu_s": _ms(r["train_cpu_s"] for r in runs),
                  "finetune_wall_s": _ms(r["finetune_wall_s"] for r in runs),
                  "recall_constrained_curated_test": _ms(r["final"].get("recall_constrained")
                                                         for r in runs),
                  "recall_all_heldout_pairs": _ms(x["value"] for x in mm),
                  "diff_vs_best": _ms(x["diff_vs_best"] for x in mm),
                  "per_seed_diff_ci95": [x["diff_ci95"] for x in mm],
                  "best_baseline": runs[0]["choice"]["all_heldout_pairs"]["best_baseline"],
                  "above_best_all_seeds": all(x["diff_ci95"][0] > 0 for x in mm)}
    return out


def markdown(res: dict) -> str:
    lines = ["| top_k | train examples (context items) | steps (batch 32) | train CPU s | "
             "recall, all held-out pairs | − best baseline [95% CI per seed] | CI above 0 in "
             "every seed |", "|---|---|---|---|---|---|---|"]
    for k, s in res.get("summary", {}).items():
        c = res["curations"][k]
        cis = " ".join(f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in s["per_seed_diff_ci95"])
        r, d = s["recall_all_heldout_pairs"], s["diff_vs_best"]
        label = f"{k} (paper)" if k == "10" else (f"{k} (all)" if int(k) >= 100000 else k)
        lines.append(f"| {label} | {c['train_examples']} ({c['train_context_items']}) | "
                     f"{s['steps_done']['mean']:.0f} | {s['train_cpu_s']['mean']:.0f} | "
                     f"{r['mean']:.3f} ± {r['sd']:.3f} | {d['mean']:+.3f} {cis} | "
                     f"{'yes' if s['above_best_all_seeds'] else 'no'} ({s['seeds']} seeds) |")
    runs = next((v for v in res.get("runs", {}).values() if v), None)
    if runs:
        a = runs[0]["choice"]["all_heldout_pairs"]
        t = a["methods"]["transition"]["recall"]
        rs = a["methods"]["random_sibling"]["recall"]
        lines += ["", f"Best baseline: {a['best_baseline']}. Baselines on the same "
                  f"{a['n_cases']} cases / {a['n_contexts']} held-out contexts (identical for "
                  f"every top_k): transition {t['value']:.3f} "
                  f"[{t['ci95'][0]:.3f}, {t['ci95'][1]:.3f}], random sibling "
                  f"{rs['value']:.3f}. Training examples never contain a held-out context "
                  f"item (checked: overlap 0 for every top_k)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top-k", default=",".join(map(str, TOP_KS)),
                    help="comma-separated CurationConfig.top_k values")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3)")
    ap.add_argument("--budget-s", type=float, help="CPU seconds per run (default 120)")
    ap.add_argument("--data", choices=("ml100k", "synth"), default="ml100k")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--from-partial", action="store_true",
                    help="write the result from the partial file of a cut-short run")
    a = ap.parse_args(argv)
    try:
        top_ks = tuple(int(x) for x in a.top_k.split(",") if x)
    except ValueError:
        ap.error("--top-k: comma-separated integers >= 1, e.g. 10,50,100000")
    if not top_ks or min(top_ks) < 1:
        ap.error("--top-k: comma-separated integers >= 1, e.g. 10,50,100000")
    seeds = tuple(range(a.seeds or (1 if a.quick else 3)))
    budget = a.budget_s or (8.0 if a.quick else 120.0)
    name = ("curation_size" + ("" if a.data == "ml100k" else f"_{a.data}")
            + ("_quick" if a.quick else ""))
    partial = RESULTS / f"{name}.partial.json"
    if a.from_partial:
        res = json.loads(partial.read_text())
        res["cut_short"] = True
    else:
        root = Path(tempfile.mkdtemp(prefix="bench-curation-size-"))
        try:
            res = run(a.quick, top_ks, seeds, budget, root, partial, a.data)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    write_results(name, res, markdown(res), partial)
    return 0


if __name__ == "__main__":
    sys.exit(main())
