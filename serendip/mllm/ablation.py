"""The paper's offline ablations (Figures 3-5) on the synthetic platform.

Every variant is a fine-tune from the same curated selection, with examples rebuilt for its
prompt config, evaluated on the same held-out context items every ``eval_every`` steps:

* ``prompt``    (Fig. 3): text only / video only / video + text / video with chain of thought,
  4 uniformly sampled frames;
* ``frames``    (Fig. 4): chain of thought with 1, 2, 4, 8 frames;
* ``thumbnail`` (Fig. 5): chain of thought with the thumbnail vs one sampled frame.

Outputs under ``out_dir``: one PNG per group (recall and match rate vs steps, unconstrained as
the paper plots them; recall under the trie dashed), ``table.md`` (final/best figures, steps to
a 0.95 match rate, and a paper-vs-ours verdict per finding with a noise check) and
``results.json``. Finished variants are reused when the ablation is re-run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa

from serendip.data.io import atomic_write_bytes
from serendip.errors import ConfigError
from serendip.mllm.config import FinetuneConfig, to_jsonable
from serendip.mllm.train import finetune
from serendip.prompts import PromptConfig

VARIANTS: dict[str, PromptConfig] = {
    "text": PromptConfig("text", 4),
    "video": PromptConfig("video", 4),
    "multimodal": PromptConfig("multimodal", 4),
    "cot": PromptConfig("cot", 4),
    "cot-1f": PromptConfig("cot", 1),
    "cot-2f": PromptConfig("cot", 2),
    "cot-8f": PromptConfig("cot", 8),
    "cot-thumbnail": PromptConfig("cot", 1, use_thumbnail=True),
}
LABELS = {"text": "Text only", "video": "Video only", "multimodal": "Video and text",
          "cot": "Video, CoT (4 frames)", "cot-1f": "CoT, 1 frame", "cot-2f": "CoT, 2 frames",
          "cot-8f": "CoT, 8 frames", "cot-thumbnail": "CoT, thumbnail"}
GROUPS: dict[str, tuple[str, ...]] = {
    "prompt": ("text", "video", "multimodal", "cot"),
    "frames": ("cot-1f", "cot-2f", "cot", "cot-8f"),
    "thumbnail": ("cot-thumbnail", "cot-1f"),
}
MATCH_TARGET = 0.95


@dataclass
class AblationConfig:
    """The prompt/frames/thumbnail ablation of paper §4.2 (Figures 3-5); validated on
    construction."""

    groups: tuple[str, ...] = field(default=("prompt", "frames", "thumbnail"), metadata={
        "help": "ablation groups to run: some of prompt (Fig. 3), frames (Fig. 4), thumbnail "
                "(Fig. 5)"})
    steps: int = field(default=300, metadata={"help": "fine-tuning steps per variant; >= 1"})
    eval_every: int = field(default=50, metadata={
        "help": "steps between held-out evaluations (the curve's points); >= 1"})
    seeds: tuple[int, ...] = field(default=(0,), metadata={
        "help": "seeds per variant (mean and spread reported); at least one"})
    keep_models: bool = field(default=False, metadata={
        "help": "keep each variant's model directory, not just its curve"})
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig, metadata={
        "help": "the fine-tuning settings every variant shares (steps, eval_every and the "
                "prompt are set per variant)"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        unknown = set(self.groups) - set(GROUPS)
        if unknown or not self.groups:
            raise ConfigError(f"unknown ablation group(s) {sorted(unknown)}", field="groups",
                              fix=f"use some of {', '.join(GROUPS)}")
        if not self.seeds:
            raise ConfigError("no seeds", field="seeds", fix="give at least one seed")
        for name in ("steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}", field=name, fix="use >= 1")

    def variants(self) -> list[str]:
        seen: list[str] = []
        for g in self.groups:
            seen += [v for v in GROUPS[g] if v not in seen]
        return seen


BuildExamples = Callable[[PromptConfig], pa.Table]


def _mean_history(histories: list[list[dict]]) -> list[dict]:
    keys = ("recall", "match_rate", "recall_constrained", "match_rate_constrained",
            "train_loss")
    out = []
    for rows in zip(*histories):
        row = {"step": rows[0]["step"], "n": rows[0].get("n", 0)}
        for k in keys:
            vals = [r[k] for r in rows if k in r]
            if vals:
                row[k] = sum(vals) / len(vals)
        out.append(row)
    return out


def _train_variant(examples: pa.Table, clusters: pa.Table, ft: FinetuneConfig,
                   prompt: PromptConfig, run_dir: Path, items: pa.Table | None,
                   base_dir: str | None, keep_model: bool) -> dict:
    """One (variant, seed) run; module-level so a worker process can run it."""
    res = finetune(examples, clusters, ft, run_dir / "model", prompt_config=prompt, items=items,
                   resume=False, progress=False, base_dir=base_dir)
    if not keep_model:
        shutil.rmtree(run_dir / "model", ignore_errors=True)
    shutil.rmtree(run_dir / ".model.work", ignore_errors=True)
    return {"history": res.history, "seconds": res.seconds,
            "trainable_params": res.trainable_params}


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_ablation(build_examples: BuildExamples, clusters: pa.Table, cfg: AblationConfig,
                 out_dir: str | os.PathLike, items: pa.Table | None = None,
                 on_variant: Callable[[str, int, dict], None] | None = None,
                 progress: bool = True, base_dir: str | None = None, workers: int = 1) -> dict:
    """Fine-tune every variant of the selected groups; write plots, table and JSON.

    Runs are independent, so with ``workers`` > 1 (0: one per CPU core; a run-time flag, not
    a setting) they train in that many processes, each
    with an equal share of the CPU threads: the tiny model scales poorly across threads, so
    runs side by side finish sooner than one at a time with every thread (1.12x on 2 cores for
    two 240-step runs, worker start-up included: ``make bench``, ``ablation``). The worker
    count changes only torch's thread count, hence float reduction order: the held-out
    metrics came out identical, training losses within ~1e-4.

    Progress is one bar over the (variant, seed) runs, each run's best recall as
    it ends: per-step bars of a dozen short runs would bury it."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    cfg.check()
    if workers < 0:
        raise ConfigError(f"workers={workers}", field="workers",
                          fix="use 0 (one per CPU core) or a positive count")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: dict[tuple[str, int], dict] = {}
    jobs: dict[tuple[str, int], tuple] = {}
    for name in cfg.variants():
        prompt = VARIANTS[name]
        examples = build_examples(prompt)
        for seed in cfg.seeds:
            run_dir = out / "runs" / f"{name}-s{seed}"
            ft = replace(cfg.finetune, steps=cfg.steps, eval_every=cfg.eval_every,
                         save_every=max(cfg.steps, 1), seed=seed, prompt=None)
            key = {"config": to_jsonable(ft), "prompt": to_jsonable(prompt),
                   "examples": examples.num_rows}
            done = run_dir / "result.json"
            if done.exists() and json.loads(done.read_text()).get("key") == key:
                records[(name, seed)] = json.loads(done.read_text())
            else:
                jobs[(name, seed)] = (key, (examples, clusters, ft, prompt, run_dir, items,
                                            base_dir, cfg.keep_models))
    bar = tqdm(total=len(records) + len(jobs), initial=len(records), desc="ablation runs",
               disable=not progress, unit="run")

    def finish(name: str, seed: int, key: dict, rec: dict) -> None:
        rec = {"key": key, **rec}
        atomic_write_bytes(out / "runs" / f"{name}-s{seed}" / "result.json",
                           json.dumps(rec, indent=2).encode())
        records[(name, seed)] = rec
        best = max((r.get("recall_constrained", 0.0) for r in rec["history"]), default=0.0)
        bar.set_postfix_str(f"{name} seed {seed}: best recall {best:.3f}")
        bar.update()
        if on_variant:
            on_variant(name, seed, rec)

    workers = min(workers if workers > 0 else (os.cpu_count() or 1), len(jobs))
    if workers <= 1:
        for (name, seed), (key, args) in jobs.items():
            bar.set_postfix_str(f"{name} seed {seed}: training")
            finish(name, seed, key, _train_variant(*args))
    else:
        import multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            bar.set_postfix_str(f"{workers} runs at a time, {threads} thread(s) each")
            futures = {pool.submit(_train_variant, *args): (run, key)
                       for run, (key, args) in jobs.items()}
            for fut in as_completed(futures):
                (name, seed), key = futures[fut]
                finish(name, seed, key, fut.result())
    bar.close()
    results: dict[str, dict] = {}
    for name in cfg.variants():
        recs = [records[(name, seed)] for seed in cfg.seeds]
        hist = _mean_history([r["history"] for r in recs])
        results[name] = {"label": LABELS[name], "prompt": to_jsonable(VARIANTS[name]),
                         "history": hist,
                         "seconds": sum(r["seconds"] for r in recs) / len(recs),
                         "summary": summarize(hist)}
    plots = {g: str(plot_group(g, results, out / f"{g}.png")) for g in cfg.groups}
    verdicts = paper_verdicts(results)
    table = ablation_markdown(results, cfg, verdicts)
    atomic_write_bytes(out / "table.md", table.encode())
    payload = {"config": to_jsonable(cfg), "results": results, "verdicts": verdicts,
               "plots": plots}
    atomic_write_bytes(out / "results.json", json.dumps(payload, indent=2).encode())
    return payload


def summarize(hist: list[dict]) -> dict:
    if not hist or "recall" not in hist[-1]:
        return {}
    final = hist[-1]
    first = next((h["step"] for h in hist if h.get("match_rate", 0) >= MATCH_TARGET), None)
    late = hist[-2:]
    return {"final_recall": final["recall"], "best_recall": max(h["recall"] for h in hist),
            "late_recall": sum(h["recall"] for h in late) / len(late),
            "final_match_rate": final["match_rate"],
            "final_recall_constrained": final["recall_constrained"],
            "final_match_rate_constrained": final["match_rate_constrained"],
            "auc_match_rate": sum(h["match_rate"] for h in hist) / len(hist),
            "steps_to_match_rate": first, "n": final.get("n", 0)}


def _se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-9) / max(n, 1))


def _compare(results: dict, a: str, b: str, metric: str = "best_recall"
             ) -> tuple[str, bool, str]:
    """(direction 'higher'|'lower'|'same', significant, text) for variant a vs b.

    Significant = beyond 2 standard errors of two independent proportions on ``n`` held-out
    examples (conservative: both variants see the same examples). 'same' = within 0.02.
    """
    sa, sb = results[a]["summary"], results[b]["summary"]
    va, vb = sa[metric], sb[metric]
    band = 2 * math.sqrt(_se(va, sa["n"]) ** 2 + _se(vb, sb["n"]) ** 2)
    direction = "same" if abs(va - vb) <= 0.02 else ("higher" if va > vb else "lower")
    significant = abs(va - vb) > band
    return direction, significant, (f"{va:.3f} vs {vb:.3f} "
                                    f"({'beyond' if significant else 'within'} noise "
                                    f"±{band:.3f})")


def paper_verdicts(results: dict) -> list[dict]:
    """The paper's findings (§3.1) checked against our curves."""
    # "late" = mean recall of the last two evaluations (after convergence); "best" = peak
    checks = [
        ("video", "text", "higher", "late", "Video input beats text only (Fig. 3)"),
        ("multimodal", "video", "lower", "late",
         "Naive video + text concatenation drops recall vs video only (Fig. 3)"),
        ("cot", "video", "same", "best",
         "CoT reaches peak recall comparable to video only (Fig. 3)"),
        ("cot", "cot-1f", "higher", "late", "4 frames beat 1 frame (Fig. 4)"),
        ("cot-8f", "cot", "same", "late", "Beyond 4 frames gains diminish (Fig. 4)"),
        ("cot-thumbnail", "cot-1f", "higher", "late",
         "A thumbnail beats one sampled frame (Fig. 5)"),
    ]
    out = []
    for a, b, expect, which, finding in checks:
        if a not in results or b not in results or not results[a]["summary"] \
                or not results[b]["summary"]:
            continue
        got, significant, text = _compare(results, a, b, f"{which}_recall")
        agrees = (not significant) if expect == "same" else got == expect
        observed = got if expect == "same" or not agrees else \
            f"{got} ({'significant' if significant else 'within noise'})"
        out.append({"finding": finding, "a": a, "b": b, "expected": expect,
                    "observed": observed, "significant": significant,
                    "detail": f"{which} recall {LABELS[a]} vs {LABELS[b]}: {text}",
                    "agrees": agrees})
    if "cot" in results and "video" in results and results["cot"]["summary"] \
            and results["video"]["summary"]:
        a, b = results["cot"]["summary"], results["video"]["summary"]
        out.append({"finding": "CoT converges faster in match rate (Fig. 3)", "a": "cot",
                    "b": "video", "expected": "higher",
                    "observed": "higher" if a["auc_match_rate"] > b["auc_match_rate"] + 0.01
                    else ("same" if abs(a["auc_match_rate"] - b["auc_match_rate"]) <= 0.01
                          else "lower"),
                    "detail": f"mean match rate over the curve {a['auc_match_rate']:.3f} vs "
                              f"{b['auc_match_rate']:.3f}; first step >= {MATCH_TARGET}: "
                              f"{a['steps_to_match_rate']} vs {b['steps_to_match_rate']}",
                    "agrees": a["auc_match_rate"] > b["auc_match_rate"] + 0.01})
    return out


def ablation_markdown(results: dict, cfg: AblationConfig, verdicts: list[dict]) -> str:
    lines = [f"# Offline ablations ({cfg.steps} steps, eval every {cfg.eval_every}, "
             f"seeds {list(cfg.seeds)}, batch {cfg.finetune.batch_size})", "",
             "| group | variant | final recall | late recall | best recall | final match rate | "
             f"recall (trie) | step match rate >= {MATCH_TARGET} | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for g in cfg.groups:
        for v in GROUPS[g]:
            s = results[v]["summary"]
            if not s:
                continue
            lines.append(f"| {g} | {LABELS[v]} | {s['final_recall']:.3f} | "
                         f"{s['late_recall']:.3f} | "
                         f"{s['best_recall']:.3f} | {s['final_match_rate']:.3f} | "
                         f"{s['final_recall_constrained']:.3f} | "
                         f"{s['steps_to_match_rate'] or '-'} | {results[v]['seconds']:.0f} |")
    n = next((results[v]["summary"].get("n") for v in results if results[v]["summary"]), 0)
    lines += ["", f"Held-out examples per evaluation: {n}. Late recall = mean of the last two "
              "evaluations. 'Agrees' compares the direction; '(within noise)' marks a "
              "difference inside 2 standard errors of the held-out proportions.", "",
              "## Paper vs ours", "",
              "| paper's finding | expected | observed | agrees | detail |", "|---|---|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v['finding']} | {v['expected']} | {v['observed']} | "
                     f"{'yes' if v['agrees'] else 'no'} | {v['detail']} |")
    return "\n".join(lines) + "\n"


def plot_group(group: str, results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_m) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, v in enumerate(GROUPS[group]):
        hist = results.get(v, {}).get("history") or []
        if not hist or "recall" not in hist[0]:
            continue
        steps = [h["step"] for h in hist]
        colour = f"C{i}"
        ax_r.plot(steps, [h["recall"] for h in hist], color=colour, label=LABELS[v])
        ax_r.plot(steps, [h["recall_constrained"] for h in hist], color=colour, ls="--",
                  lw=0.9, alpha=0.7)
        ax_m.plot(steps, [h["match_rate"] for h in hist], color=colour, label=LABELS[v])
    ax_r.set_title("Recall (dashed: with trie)")
    ax_m.set_title("Match rate")
    for ax in (ax_r, ax_m):
        ax.set_xlabel("training steps")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    ax_m.legend(fontsize=8, loc="lower right")
    fig.suptitle({"prompt": "Prompt types (Fig. 3)", "frames": "Number of frames (Fig. 4)",
                  "thumbnail": "Thumbnail vs one sampled frame (Fig. 5)"}[group])
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def ablation_stage(workdir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                   cfg: AblationConfig | None = None, *, progress: bool = True,
                   tracker=None, workers: int = 1) -> dict:
    """The ablations of paper Figs. 3-5 on a work directory: every variant is fine-tuned on the
    same curated selection (same pairs, same split) with its own prompt config; writes
    ``results.json``, ``table.md`` and one plot per group to ``out_dir`` (default
    ``<workdir>/ablation``) and returns the results payload. With a tracker
    (:class:`serendip.tracking.Tracker`) each variant's curve, the table and the plots are
    logged as a ``serendip-ablation`` run. The one entry shared by ``serendip evaluate
    --ablation`` and the demo. ``progress``, ``workers``: run-time flags (:func:`run_ablation`).

    Raises:
        SchemaError: a missing or malformed input table. ConfigError: a bad setting.
    """
    from serendip.config import to_dict
    from serendip.mllm.workdir import load_inputs, rebuild_examples
    from serendip.tracking import is_tracking

    cfg = cfg or AblationConfig()
    inp = load_inputs(workdir)
    out = Path(out_dir) if out_dir else inp.workdir / "ablation"

    def go() -> dict:
        return run_ablation(lambda prompt: rebuild_examples(inp, prompt), inp.clusters, cfg,
                            out, items=inp.items, progress=progress, base_dir=str(inp.workdir),
                            workers=workers)

    if not is_tracking(tracker):
        return go()
    with tracker.start_run("serendip-ablation", run_name="ablation", params=to_dict(cfg)):
        payload = go()
        for name, res in payload["results"].items():
            for row in res["history"]:
                tracker.log_metrics({f"{name}.{k}": v for k, v in row.items()
                                     if k in ("recall", "match_rate", "recall_constrained")},
                                    step=row["step"])
        tracker.log_artifact(out / "table.md")
        for png in payload["plots"].values():
            tracker.log_artifact(png, "plots")
    return payload
