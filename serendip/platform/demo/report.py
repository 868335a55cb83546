"""The demo's report: ``report.md`` + ``report.json`` (one section per stage, figures beside
the text), for the synthetic platform (:func:`write_report`) and for your own tables
(:func:`write_data_report`)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from serendip.curation import CurationManifest, read_curation
from serendip.report import Report, markdown_table


def write_report(wd: Path, info: dict) -> Path:
    """report.md / report.json of ``serendip demo`` on the synthetic platform: its ground
    truth, the tree, curation, fine-tuning, the gate, scoring, serving, the online simulation
    against the baselines (paper Fig. 6), the replay evaluation and the ablations (Figs. 3–5).
    Returns the path of report.md."""
    rep = Report("Serendip demo report")
    truth = _read_json(wd / "truth" / "truth.json").get("summary", {})
    rep.add("Synthetic platform", "\n".join(
        f"- {k.replace('_', ' ')}: {v:.3f}" if isinstance(v, float) else f"- {k.replace('_', ' ')}: {v}"
        for k, v in truth.items()), truth)
    tree_md, tree_fig = _tree_section(wd)
    rep.add("Cluster tree", "Four levels of equal-traffic clusters (siblings balanced by "
            "impressions), each with a unique description.\n\n" + tree_md, tree_fig)
    _add_curation(rep, wd)
    _add_finetuning(rep, wd, info, "Fine-tuning (held-out split)")
    rep.add("Promotion gate", *gate_section(info))
    _add_scoring_and_serving(rep, info)
    sim_md = wd / "evaluation" / "online_sim.md"
    if sim_md.exists():
        sim = _read_json(wd / "evaluation" / "online_sim.json")
        rep.add("Online simulation vs baselines (paper Fig. 6)",
                sim_md.read_text() + "\n\n" + _verdict(sim)
                + "\n\n![relative change](evaluation/online_sim.png)", sim)
    replay_section = _replay_section(wd)
    if replay_section is not None:
        rep.add(*replay_section)
    table = wd / "evaluation" / "ablation" / "table.md"
    if table.exists():
        plots = sorted((wd / "evaluation" / "ablation").glob("*.png"))
        body = table.read_text()
        if body.startswith("# "):                  # the runner's own title, as a caption
            title, _, body = body.partition("\n")
            body = f"*{title[2:].strip()}*\n{body}"
        rep.add("Ablations (paper Figs. 3–5)", body + "\n\n" + "\n".join(
            f"![{p.stem}]({p.relative_to(wd)})" for p in plots),
            _read_json(wd / "evaluation" / "ablation.json").get("verdicts"))
    _add_run(rep, info)
    md, _ = rep.write(wd)
    return md


def write_data_report(wd: Path, info: dict) -> Path:
    """report.md / report.json of ``serendip demo --data``: the data and its split, the tree
    (NMI vs labels when they exist, sample descriptions), curation, fine-tuning, the gate,
    scoring, serving, the replay table (every arm, 95% intervals) and the baselines vs the
    MLLM. Returns the path of report.md."""
    rep = Report("Serendip demo report (your tables)")
    split = info.get("split", {})
    replay = _read_json(wd / "evaluation" / "replay.json")
    rep.add("Data and replay split", (
        f"Source `{info.get('data')}`. Each user's last transition was held out before any "
        f"model was trained: {split.get('heldout_transitions')} held-out transitions, "
        f"{split.get('train_transitions')} for training (`{wd}/interactions.parquet`); "
        f"held-out transitions found in the training logs: "
        f"{replay.get('heldout_in_training', '—')}.\n\n"
        "Not run here: the online simulation and the ablations (paper Figs. 3–6) need the "
        "synthetic platform's ground truth (true satisfaction of any item); the replay "
        "evaluation below replaces them."), split)
    tree_md, tree_fig = _tree_section(wd)
    tree = _read_json(wd / "cluster_tree" / "tree.json")
    labels = tree.get("stats", {}).get("labels") or {}
    lab_md = ""
    if any(k.startswith("level") for k in labels):
        lab_md = ("\n\nAgreement with the item labels (primary label; labels never enter the "
                  f"embedding), {labels.get('items')} items, {labels.get('labels')} labels:\n\n"
                  + markdown_table([{"level": k[5:], "NMI": v.get("nmi"), "ARI": v.get("ari")}
                                    for k, v in labels.items() if k.startswith("level")]))
    else:
        lab_md = "\n\nNo item labels in the data: no agreement figures."
    desc_md, desc_rows = _descriptions(wd)
    rep.add("Cluster tree", f"Branching `{tree.get('branching', tree.get('config', {}).get('branching'))}`"
            f".\n\n{tree_md}{lab_md}\n\nSample descriptions (largest clusters per level):\n\n"
            + desc_md, {**tree_fig, "labels": labels, "sample_descriptions": desc_rows})
    _add_curation(rep, wd)
    _add_finetuning(rep, wd, info, "Fine-tuning (curated held-out split)")
    base = _read_json(wd / "evaluation" / "baselines.json")
    choice_md, choice_fig = _choice_headline(base)
    rep.add("Baselines vs the MLLM (which candidate cluster users chose next)", (
        "Baselines computed on the training logs only; the MLLM ranks each context's "
        "candidate clusters by likelihood.\n\n" + choice_md + "\n\n"
        + base.get("markdown", "_(not computed)_")), {"summary": choice_fig, "full": base})
    gate_md, gate_fig = gate_section(info, choice_fig)
    rep.add("Promotion gate", gate_md, gate_fig)
    _add_scoring_and_serving(rep, info)
    rep.add(*(_replay_section(wd) or ("Replay evaluation (held-out last transitions)",
                                        "_(not run)_", {})))
    _add_run(rep, info)
    md, _ = rep.write(wd)
    return md


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _tree_section(wd: Path) -> tuple[str, dict]:
    clusters = pq.read_table(wd / "clusters.parquet").to_pandas()
    tree = _read_json(wd / "cluster_tree" / "tree.json")
    rows, figures = [], {}
    for level in (1, 2, 3, 4):
        c = clusters[clusters.level == level]
        st = tree.get("stats", {}).get(f"level{level}", {})
        row = {"level": level, "clusters": len(c), "items/cluster (median)": float(c["size"].median()),
               "sibling traffic max/min (worst balanceable)":
                   st.get("balanceable_max_min_traffic_worst"),
               "share within bound": st.get("within_tol_share"),
               # what the tree balanced (impressions^traffic_power): the demo's 0.5 keeps the
               # Zipf-weighted taxonomy, so raw-traffic ratios above are not what it promised
               "balanced on": st.get("balanced_on", "impressions"),
               "max/min on it (worst achievable)": st.get("achievable_max_min_traffic_worst"),
               "example description": c.description.iloc[0] if len(c) else ""}
        rows.append(row)
        figures[f"level{level}"] = {**row, **st}
    return markdown_table(rows), figures


def _descriptions(wd: Path, per_level: int = 3) -> tuple[str, list[dict]]:
    clusters = pq.read_table(wd / "clusters.parquet").to_pandas()
    rows = []
    for level in (1, 2, 3, 4):
        c = clusters[clusters.level == level].sort_values("size", ascending=False)
        for _, r in c.head(per_level).iterrows():
            rows.append({"level": level, "cluster": r["cluster_id"], "items": int(r["size"]),
                         "description": r["description"]})
    return markdown_table(rows), rows


def _premise(cur: CurationManifest) -> str:
    """The paper's motivating check at the curated (l, δ), then at every (l, δ) the tree allows:
    on average over all logged pairs, and for the pairs curation keeps."""
    st = cur.stats
    pairs = st.get("pairs", {})
    ser = pairs.get("serendipitous", {}).get("mean_satisfaction") or 0.0
    sim = pairs.get("similar", {}).get("mean_satisfaction") or 0.0
    text = (f"The paper's motivating observation — serendipitous next items satisfy more than "
            f"similar ones — {'holds' if ser > sim else 'does NOT hold'} on average at "
            f"(l={cur.level}, δ={cur.delta}) on this data ({ser:.3f} vs "
            f"{sim:.3f}).")
    if st.get("selected_mean_satisfaction") is not None:
        text += (f" The pairs curation keeps (top {cur.top_k} context items per next "
                 f"cluster) average {st['selected_mean_satisfaction']:.3f}.")
    grid = st.get("premise_by_level_delta")
    if grid:
        holds = [f"(l={g['level']}, δ={g['delta']})" for g in grid
                 if (g["serendipitous_minus_similar"] or 0) > 0]
        text += ("\n\nSerendipitous minus similar mean satisfaction at every (l, δ) — the "
                 "premise holds at " + (", ".join(holds) if holds else "none of them") + ":\n\n"
                 + markdown_table(grid))
    return text


def _add_curation(rep, wd: Path) -> None:
    """The curation section (both demos): (l, δ), top-k, the prompt the stage chose, the pair
    counts and the paper's premise."""
    cur = read_curation(wd)
    pairs = cur.stats.get("pairs", {})
    chosen = cur.stats.get("prompt", {}).get("chosen")
    rep.add("Serendipitous curation", (
        f"Level l={cur.level}, δ={cur.delta}, top {cur.top_k} context items "
        f"per next cluster, prompt strategy `{cur.prompt.strategy}`"
        + (f" ({chosen})" if chosen else "") + ".\n\n"
        + markdown_table([{"pairs": k, "count": v.get("pairs"),
                           "mean satisfaction": v.get("mean_satisfaction")}
                          for k, v in pairs.items()])
        + "\n\n" + _premise(cur)), cur.stats)


def _add_finetuning(rep, wd: Path, info: dict, title: str) -> None:
    """The fine-tuning section (both demos): the champion's metrics, the pipeline's
    ``evaluate`` table against the non-learned baselines, the training curves."""
    meta = _read_json(wd / "mllm" / "champion" / "serendip.json")
    m = meta.get("metrics", {})
    curves = wd / "mllm" / "champion" / "curves.png"
    offline = wd / "evaluation" / "mllm_offline.md"
    rep.add(title, (
        f"Base `{meta.get('base_model')}`, method `{meta.get('method')}`, "
        f"{meta.get('trainable_params')} trainable parameters.\n\n"
        + markdown_table([{"metric": k, "value": v} for k, v in m.items()])
        + (f"\n\nThe registered model against the non-learned baselines (pipeline step "
           f"`evaluate`):\n\n{offline.read_text()}" if offline.exists() else "")
        + (f"\n\n![training curves]({curves.relative_to(wd)})" if curves.exists() else "")),
        {"metrics": m, "registry": info.get("training", {}).get("registry")})


def gate_section(info: dict, choice: dict | None = None) -> tuple[str, dict]:
    """The pipeline's gates (MLLM against the best cluster-choice baseline on the curated
    held-out split, retriever against in-cluster popularity; issue 15 item 3), the registry
    after them, and — with ``choice`` — the model against the best baseline on all
    serendipitous pairs of held-out contexts."""
    training = info.get("training", {})
    reg = training.get("registry") or {}
    gate = training.get("gate") or {}
    rows = []
    for name, g in gate.items():
        msg = g.get("message") or ""
        rows.append({"model": name, "would the gate promote": (
            "no (forced by the demo)" if msg.startswith("FORCED") else
            "yes" if g.get("promoted") else "no"), "gate says": msg})
    fig = {"registry": reg, "gate": gate,
           "refused_by_gate": sorted(r["model"] for r in rows
                                     if r["would the gate promote"] != "yes")}
    text = ("The demo runs the pipeline with `force_promote` (as `serendip promote --force`: "
            "recorded on the version as `promoted_forced`) so that the serving and replay "
            "stages have models to run; the gate's own verdict:\n\n"
            + (markdown_table(rows) if rows else "_(no gate output found)_")
            + "\n\nRegistry after the pipeline: " + "; ".join(
                f"{n} @champion v{a.get('champion')}, @challenger v{a.get('challenger')}"
                for n, a in reg.items()) + ".")
    all_pairs = next(iter(choice.values()), None) if choice else None
    if all_pairs:
        beats = all_pairs["verdict"] == "above the best baseline"
        fig["mllm_vs_best_baseline"] = all_pairs
        fig["beats_best_baseline"] = beats
        text += (f"\n\nOn {all_pairs['n_cases']} serendipitous pairs of held-out contexts "
                 f"the model is {all_pairs['verdict']} ({all_pairs['best_baseline']}): a gate "
                 f"judging on them would {'promote' if beats else 'REFUSE'} it too.")
    return text, fig


def _add_scoring_and_serving(rep, info: dict) -> None:
    """The report's batch-scoring and serving sections (both demos)."""
    rep.add("Batch scoring and Feast", markdown_table([info.get("scoring", {})]),
            info.get("scoring"))
    calls = info.get("serving", {}).get("calls", [])
    rep.add("Serving (recommend calls)", (
        f"Server ready in {info.get('serving', {}).get('ready_s')} s.\n\n"
        + markdown_table([{"context item": c["item"], "protocol": c["protocol"],
                           "cluster": c.get("cluster_id"), "description": c.get("description"),
                           "items (source)": _slate(c)} for c in calls])),
        info.get("serving"))


def _slate(call: dict, n: int = 5) -> str:
    """A recommend answer's items, each with its source in the blended slate (``exploit`` or
    ``serendipitous``) when the answer names them."""
    ids = call.get("item_ids", [])[:n]
    sources = call.get("item_sources") or [None] * len(ids)
    return ", ".join(f"{i} ({s[:3] if s else '?'})" if s else i for i, s in zip(ids, sources))


def _verdict(sim: dict) -> str:
    models = sim.get("models", {})
    if "serendip" not in models:
        return ""
    ours, ref = models["serendip"], sim.get("reference", "exploitation")

    def rel(name):
        return ours[name]["rel_to_reference"] or 0.0

    lines = [f"- novelty vs {ref}: {100 * rel('novelty'):+.1f}%; serendipity: "
             f"{100 * rel('serendipity'):+.1f}%; cluster serendipity: "
             f"{100 * rel('cluster_serendipity'):+.1f}%"]
    if "exploration" in models:
        a = ours["satisfaction"]["mean"]
        b = models["exploration"]["satisfaction"]["mean"]
        lines.append(f"- true satisfaction: ours {a:.3f} vs exploration {b:.3f} — "
                     + ("at least the exploration baseline's" if a >= b
                        else "BELOW the exploration baseline's"))
    return "\n".join(lines)


def _ci(v: dict | None) -> str:
    if not v or v.get("value") is None:
        return "—"
    lo, hi = v.get("ci95") or (None, None)
    return f"{v['value']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{v['value']:.3f}"


def _replay_headline(replay: dict) -> tuple[str, dict]:
    arms = replay.get("subsets", {}).get("all", {}).get("arms", {})
    fig: dict = {}
    lines = []
    if "blend" in arms and "exploitation" in arms:
        b, e = arms["blend"], arms["exploitation"]
        hr_b, hr_e = b["hr"]["value"] or 0.0, e["hr"]["value"] or 0.0
        ratio = hr_b / hr_e if hr_e else None
        fig["blend_hr_over_exploitation"] = ratio
        for key in ("serendipity", "novel_impression_ratio", "cluster_serendipity"):
            fig[f"blend_minus_exploitation_{key}"] = (
                (b[key]["value"] or 0.0) - (e[key]["value"] or 0.0))
        lines.append(
            f"- blended slate vs exploitation: HR@10 {_ci(b['hr'])} vs {_ci(e['hr'])} "
            f"({'—' if ratio is None else f'{ratio:.2f}×'}; target ≥ 0.9×); serendipity "
            f"{_ci(b['serendipity'])} vs {_ci(e['serendipity'])}; novel impression ratio "
            f"{_ci(b['novel_impression_ratio'])} vs {_ci(e['novel_impression_ratio'])}")
    if "ours" in arms:
        lines.append(f"- ours (MLLM cluster + cluster-restricted retriever): HR@10 "
                     f"{_ci(arms['ours']['hr'])}, NDCG@10 {_ci(arms['ours']['ndcg'])}")
    return "\n".join(lines), fig


def _choice_headline(base: dict) -> tuple[str, dict]:
    lines, fig = [], {}
    for cs in base.get("case_sets", []):
        model = cs.get("methods", {}).get("model")
        best = cs.get("best_baseline")
        if model is None or best is None:
            continue
        d = model["recall"]
        lo, hi = d.get("diff_ci95") or (None, None)
        verdict = ("above the best baseline" if lo is not None and lo > 0 else
                   "BELOW the best baseline" if hi is not None and hi < 0 else
                   "not separable from the best baseline")
        fig[cs["cases"]] = {"model_recall": d["value"], "best_baseline": best,
                            "best_baseline_recall": cs["methods"][best]["recall"]["value"],
                            "diff": d.get("diff"), "diff_ci95": d.get("diff_ci95"),
                            "verdict": verdict, "n_cases": cs["n_cases"]}
        lines.append(f"- {cs['cases']} ({cs['n_cases']} cases): MLLM recall {_ci(d)} vs best "
                     f"baseline {best} {_ci(cs['methods'][best]['recall'])}; difference "
                     f"{d.get('diff', 0):+.3f} [{lo:+.3f}, {hi:+.3f}]: {verdict}")
    return "\n".join(lines), fig


def _replay_section(wd: Path) -> tuple[str, str, dict] | None:
    replay = _read_json(wd / "evaluation" / "replay.json")
    if not replay:
        return None
    head_md, head_fig = _replay_headline(replay)
    replay_md = wd / "evaluation" / "replay.md"
    cfg = replay.get("config", {})
    return ("Replay evaluation (held-out last transitions)", (
        f"{replay.get('n_cases')} held-out transitions (each user's last, removed before any "
        f"model was trained) replayed through every arm at l={cfg.get('level')}, "
        f"δ={cfg.get('delta')} ({replay.get('seconds')} s); value [95% bootstrap "
        f"interval]; held-out transitions found in the training logs: "
        f"{replay.get('heldout_in_training')}.\n\n" + head_md + "\n\n"
        + (replay_md.read_text() if replay_md.exists() else "")),
        {"headline": head_fig, "subsets": replay.get("subsets"), "mllm": replay.get("mllm"),
         "n_cases": replay.get("n_cases"), "seconds": replay.get("seconds"),
         "heldout_in_training": replay.get("heldout_in_training")})


def _add_run(rep, info: dict) -> None:
    """The step timings and the steps reused from an earlier run (both demos)."""
    rep.add("Run", markdown_table([{"step": k, "seconds": v}
                                   for k, v in info.get("timings_s", {}).items()])
            + f"\n\nCached steps reused: {info.get('cached_steps') or 'none'}.",
            {k: info[k] for k in ("timings_s", "size", "preset", "data") if k in info})
