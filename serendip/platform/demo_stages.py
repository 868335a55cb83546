"""The demo's stages, one function each (see :mod:`serendip.platform.demo`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from serendip.platform.demo import DemoSize


def synth(wd: Path, p: DemoSize, seed: int) -> dict:
    from serendip.data.synth import SynthConfig, write_synth

    return write_synth(SynthConfig(items=p.items, users=p.users, interactions=p.interactions,
                                   seed=seed, branching=p.branching), wd)


def _publish(artifact_dir: str | Path, wd: Path) -> list[str]:
    """Copy a pipeline artifact (a directory laid out like the work directory) into ``wd``."""
    src = Path(artifact_dir)
    copied = []
    for path in sorted(src.iterdir()) if src.is_dir() else []:
        if path.name in ("items.parquet", "interactions.parquet", "truth"):
            continue
        dest = wd / path.name
        if path.is_dir():
            tmp = wd / f".{path.name}.publish"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(path, tmp)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        else:
            tmp = wd / f".{path.name}.publish"
            shutil.copy2(path, tmp)
            os.replace(tmp, dest)
        copied.append(path.name)
    return copied


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server at {url} not ready after {timeout:.0f} s")


def serve_and_recommend(wd: Path, env: dict[str, str], n_calls: int = 3) -> dict:
    """Start ``serendip serve`` in a subprocess, print a few ``recommend`` answers, stop it."""
    import pyarrow.parquet as pq

    from serendip.platform.serving.ports import free_ports

    ports = dict(zip(("http", "grpc", "thttp", "tgrpc", "tmetrics"), free_ports(5)))
    log = (wd / "logs")
    log.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "serendip.cli", "serve", "--workdir", str(wd),
           "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
           "--triton-http-port", str(ports["thttp"]), "--triton-grpc-port", str(ports["tgrpc"]),
           "--triton-metrics-port", str(ports["tmetrics"])]
    with open(log / "serve.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{ports['http']}"
    calls = []
    try:
        t0 = time.perf_counter()
        _wait_ready(url, proc)
        ready_s = time.perf_counter() - t0
        scored = pq.read_table(wd / "item_serendipity.parquet", columns=["item_id"]).column(
            "item_id").to_pylist()
        inter = pq.read_table(wd / "interactions.parquet",
                              columns=["user_id", "next_item_id"]).to_pandas()
        history = inter[inter.user_id == inter.user_id.iloc[0]].next_item_id.tolist()[-5:]
        for item, protocol in zip(scored[:n_calls], ("http", "grpc", "http")):
            port = ports["http"] if protocol == "http" else ports["grpc"]
            r = subprocess.run([sys.executable, "-m", "serendip.cli", "recommend", "--item", item,
                                "--history", *history, "--k", "5", "--protocol", protocol,
                                "--url", f"127.0.0.1:{port}", "--json"],
                               capture_output=True, text=True, env=env, timeout=120)
            if r.returncode != 0:
                raise RuntimeError(f"recommend failed: {r.stderr.strip()}")
            answer = json.loads(r.stdout)
            print(f"  recommend --item {item} ({protocol}): cluster {answer.get('cluster_id')} "
                  f"'{answer.get('description')}' -> {answer.get('item_ids')}")
            calls.append({"item": item, "protocol": protocol, **answer})
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"ready_s": round(ready_s, 1), "calls": calls}


def online_sim(wd: Path, p: DemoSize) -> dict:
    from serendip.evaluation.online_sim import OnlineSimConfig
    from serendip.evaluation.workdir import online_sim as run

    level, delta = _level_delta(wd)
    return run(wd, OnlineSimConfig(n_contexts=p.n_contexts, seeds=p.seeds, level=level,
                                   delta=delta))


def _level_delta(wd: Path) -> tuple[int, int]:
    cur = json.loads((wd / "curation.json").read_text())
    return int(cur.get("level", 3)), int(cur.get("delta", 1))


def _pipeline_log(wd: Path, name: str) -> Path:
    from serendip.platform.kfp.runner import log_path_for

    log = log_path_for(wd, name)
    print(f"  kfp.local, one line per task; full log: {log}", flush=True)
    return log


def training(wd: Path, p: DemoSize, seed: int, branching: str | None = None,
             pipeline: dict | None = None) -> dict:
    """The training pipeline via kfp.local, then its artifacts published into ``wd``.
    ``branching``/``pipeline`` replace the preset's synthetic settings (``--data``)."""
    from serendip.platform.kfp.runner import run_local

    params = {
        "branching": branching or "/".join(str(b) for b in p.branching),
        "finetune_settings": {"steps": p.finetune_steps, "seed": seed,
                              "batch_size": p.finetune_batch,
                              "eval_every": max(25, p.finetune_steps // 4)},
        "retriever_settings": {"epochs": p.retriever_epochs, "seed": seed},
        **(p.pipeline if pipeline is None else pipeline),
    }
    from serendip.platform.kfp.runner import _params, _pipeline

    if "force_promote" in _params(_pipeline("training")):
        # The demo needs champions to serve and replay; the gate's own verdict is kept
        # (the promote message says FORCED ... against the gate: <reasons>) and reported.
        params["force_promote"] = True
    out = run_local("training", wd, None, params, log_path=_pipeline_log(wd, "training"))
    published = {}
    for key in ("tree", "examples"):
        published[key] = _publish(out[key], wd)
    _publish(out["retriever"], wd)
    _replace_dir(Path(out["model"]), wd / "mllm" / "champion")
    _replace_dir(Path(out["repository"]), wd / "model_repository")
    (wd / "evaluation").mkdir(exist_ok=True)
    shutil.copyfile(out["offline_report"], wd / "evaluation" / "mllm_offline.md")
    summary = {"published": published, "outputs": {k: str(v) for k, v in out.items()}}
    summary["registry"] = _registry_state(wd)
    summary["gate"] = _gate_outputs(Path(out["model"]).parents[1])
    return summary


def _gate_outputs(run_dir: Path) -> dict:
    """What the pipeline's gates said: the ``promote`` step (MLLM) and the retriever's gate
    inside ``train-retriever`` (their KFP executor outputs)."""
    gate = {}
    for task, name in (("promote", "serendip-mllm"), ("train-retriever", "serendip-retriever")):
        path = run_dir / task / "executor_output.json"
        try:
            doc = json.loads(json.loads(path.read_text())["parameterValues"]["Output"])
        except (OSError, KeyError, ValueError):
            continue
        gate[name] = doc.get("registry", doc) if task == "train-retriever" else doc
    return gate


def _replace_dir(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.publish"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def _registry_state(wd: Path) -> dict:
    """The aliases in the demo's own store (``wd``'s, as the pipeline used): another store
    set earlier in this process must not answer."""
    from serendip.platform import registry

    registry.setup(wd)
    state = {}
    for name in ("serendip-mllm", "serendip-retriever"):
        state[name] = {alias: registry.alias_version(name, alias)
                       for alias in ("champion", "challenger")}
    return state


def scoring(wd: Path, p: DemoSize) -> dict:
    """The scoring pipeline via kfp.local (incremental state under ``wd/scoring-state``), its
    merged table published into ``wd``, Feast materialized into ``wd/feature_repo``."""
    from serendip.platform.kfp.runner import run_local

    out = run_local("scoring", wd, None, {"tree_uri": str(wd), "coverage": p.coverage,
                                          "state_dir": str(wd / "scoring-state"),
                                          "feature_root": str(wd), "num_shards": 2},
                    log_path=_pipeline_log(wd, "scoring"))
    _publish(out["scores"], wd)
    import pyarrow.parquet as pq

    t = pq.read_table(wd / "item_serendipity.parquet", columns=["item_id", "model_version"])
    return {"scored_items": t.num_rows,
            "model_versions": sorted(set(t.column("model_version").to_pylist()))}


def ablation(wd: Path, p: DemoSize) -> dict:
    """The paper's prompt / frames / thumbnail ablations (Figures 3–5), at demo scale."""
    from serendip.locks import workdir_lock
    from serendip.mllm.ablation import AblationConfig, ablation_stage
    from serendip.mllm.stage import finetune_config
    from serendip.platform.tracking import MLflowTracker

    cfg = AblationConfig(steps=p.ablation_steps, eval_every=max(25, p.ablation_steps // 4),
                         workers=0, finetune=finetune_config(
                             settings={"batch_size": p.ablation_batch}))
    with workdir_lock(wd, "ablation", "evaluate"):
        ablation_stage(wd, wd / "evaluation" / "ablation", cfg, tracker=MLflowTracker(wd))
    summary_path = wd / "evaluation" / "ablation" / "results.json"
    data = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    (wd / "evaluation").mkdir(exist_ok=True)
    (wd / "evaluation" / "ablation.json").write_text(json.dumps(data, indent=2, default=str))
    return {"variants": sorted(data.get("results", {}))}


def _add_scoring_and_serving(rep, info: dict) -> None:
    """The report's batch-scoring and serving sections (both demos)."""
    from serendip.report import markdown_table

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


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _tree_section(wd: Path) -> tuple[str, dict]:
    import pyarrow.parquet as pq

    from serendip.report import markdown_table

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
               "example description": c.description.iloc[0] if len(c) else ""}
        rows.append(row)
        figures[f"level{level}"] = {**row, **st}
    return markdown_table(rows), figures


def _premise(cur: dict) -> str:
    """The paper's motivating check at the curated (l, δ), then at every (l, δ) the tree allows:
    on average over all logged pairs, and for the pairs curation keeps."""
    from serendip.report import markdown_table

    st = cur.get("stats", {})
    pairs = st.get("pairs", {})
    ser = pairs.get("serendipitous", {}).get("mean_satisfaction") or 0.0
    sim = pairs.get("similar", {}).get("mean_satisfaction") or 0.0
    text = (f"The paper's motivating observation — serendipitous next items satisfy more than "
            f"similar ones — {'holds' if ser > sim else 'does NOT hold'} on average at "
            f"(l={cur.get('level')}, δ={cur.get('delta')}) on this data ({ser:.3f} vs "
            f"{sim:.3f}).")
    if st.get("selected_mean_satisfaction") is not None:
        text += (f" The pairs curation keeps (top {cur.get('top_k')} context items per next "
                 f"cluster) average {st['selected_mean_satisfaction']:.3f}.")
    grid = st.get("premise_by_level_delta")
    if grid:
        holds = [f"(l={g['level']}, δ={g['delta']})" for g in grid
                 if (g["serendipitous_minus_similar"] or 0) > 0]
        text += ("\n\nSerendipitous minus similar mean satisfaction at every (l, δ) — the "
                 "premise holds at " + (", ".join(holds) if holds else "none of them") + ":\n\n"
                 + markdown_table(grid))
    return text


def write_report(wd: Path, info: dict) -> Path:
    from serendip.report import Report, markdown_table

    rep = Report("Serendip demo report")
    truth = _read_json(wd / "truth" / "truth.json").get("summary", {})
    rep.add("Synthetic platform", "\n".join(
        f"- {k.replace('_', ' ')}: {v:.3f}" if isinstance(v, float) else f"- {k.replace('_', ' ')}: {v}"
        for k, v in truth.items()), truth)
    tree_md, tree_fig = _tree_section(wd)
    rep.add("Cluster tree", "Four levels of equal-traffic clusters (siblings balanced by "
            "impressions), each with a unique description.\n\n" + tree_md, tree_fig)
    cur = _read_json(wd / "curation.json")
    pairs = cur.get("stats", {}).get("pairs", {})
    rep.add("Serendipitous curation", (
        f"Level l={cur.get('level')}, δ={cur.get('delta')}, top {cur.get('top_k')} context items "
        f"per next cluster, prompt strategy `{cur.get('strategy')}`.\n\n"
        + markdown_table([{"pairs": k, "count": v.get("pairs"),
                           "mean satisfaction": v.get("mean_satisfaction")}
                          for k, v in pairs.items()])
        + "\n\n" + _premise(cur)), cur.get("stats", {}))
    meta = _read_json(wd / "mllm" / "champion" / "serendip.json")
    m = meta.get("metrics", {})
    curves = wd / "mllm" / "champion" / "curves.png"
    offline = wd / "evaluation" / "mllm_offline.md"
    rep.add("Fine-tuning (held-out split)", (
        f"Base `{meta.get('base_model')}`, method `{meta.get('method')}`, "
        f"{meta.get('trainable_params')} trainable parameters.\n\n"
        + markdown_table([{"metric": k, "value": v} for k, v in m.items()])
        + (f"\n\nThe registered model against the non-learned baselines (pipeline step "
           f"`evaluate`):\n\n{offline.read_text()}" if offline.exists() else "")
        + (f"\n\n![training curves]({curves.relative_to(wd)})" if curves.exists() else "")),
        {"metrics": m, "registry": info.get("training", {}).get("registry")})
    rep.add("Promotion gate", *gate_section(info))
    _add_scoring_and_serving(rep, info)
    sim_md = wd / "evaluation" / "online_sim.md"
    if sim_md.exists():
        from serendip.evaluation.online_sim import METRICS

        sim = _read_json(wd / "evaluation" / "online_sim.json")
        rep.add("Online simulation vs baselines (paper Fig. 6)",
                sim_md.read_text() + "\n\n" + _verdict(sim, METRICS)
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
    rep.add("Run", markdown_table([{"step": k, "seconds": v}
                                   for k, v in info.get("timings_s", {}).items()])
            + f"\n\nCached steps reused: {info.get('cached_steps') or 'none'}.",
            {"timings_s": info.get("timings_s"), "size": info.get("size"),
             "preset": info.get("preset")})
    md, _ = rep.write(wd)
    return md


def _verdict(sim: dict, metrics) -> str:
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


# ------------------------------------------------------------------ --data (your own tables)
def replay_split(wd: Path, src: Path) -> dict:
    """Hold out each user's last transition of ``src`` BEFORE any model is trained: ``items``
    and the training interactions go into ``wd`` (every later stage reads only those), item
    labels (and a synthetic platform's ``truth/``) are copied, and relative media paths keep
    resolving against ``src`` (``media_base.txt``)."""
    from serendip.data.media import MEDIA_BASE_FILE
    from serendip.evaluation.replay import ReplayConfig, write_replay_split
    from serendip.labels import ITEM_LABELS

    out = write_replay_split(src, wd, ReplayConfig(progress=False))
    truth = src / "truth"
    if truth.is_dir():                  # the synthetic platform's ground truth
        _replace_dir(truth, wd / "truth")
    labels = src / f"{ITEM_LABELS}.parquet"
    if labels.is_file():
        tmp = wd / f".{labels.name}.publish"
        shutil.copy2(labels, tmp)
        os.replace(tmp, wd / labels.name)
        out["item_labels"] = True
    (wd / MEDIA_BASE_FILE).write_text(str(src) + "\n")
    print(f"  held out {out['heldout_transitions']} transitions ({out['holdout']}); training "
          f"on {out['train_transitions']}")
    return out


def replay_evaluation(wd: Path, src: Path, seed: int) -> dict:
    """The replay of ``src``'s held-out transitions through every arm (the fine-tuned model
    ranks each context's candidate clusters by likelihood), and the cluster-choice baselines
    against that model on the training split; both written under ``wd/evaluation``."""
    from serendip.data.io import atomic_write_bytes
    from serendip.evaluation.baselines import baselines_stage
    from serendip.evaluation.replay import ReplayConfig, replay_stage
    from serendip.mllm.inference import ClusterPredictor

    level, delta = _level_delta(wd)
    predictor = ClusterPredictor.load(wd / "mllm" / "champion", base_dir=str(wd))
    rep = replay_stage(wd, src, ReplayConfig(level=level, delta=delta, seed=seed),
                       predictor=predictor)
    base = baselines_stage(wd, predictor=predictor)
    atomic_write_bytes(wd / "evaluation" / "baselines.json",
                       json.dumps(base, indent=2, default=str).encode())
    return {"n_cases": rep["n_cases"], "heldout_in_training": rep["heldout_in_training"],
            "seconds": rep["seconds"], "level": level, "delta": delta}


def _ci(v: dict | None) -> str:
    if not v or v.get("value") is None:
        return "—"
    lo, hi = v.get("ci95") or (None, None)
    return f"{v['value']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{v['value']:.3f}"


def _descriptions(wd: Path, per_level: int = 3) -> tuple[str, list[dict]]:
    import pyarrow.parquet as pq

    from serendip.report import markdown_table

    clusters = pq.read_table(wd / "clusters.parquet").to_pandas()
    rows = []
    for level in (1, 2, 3, 4):
        c = clusters[clusters.level == level].sort_values("size", ascending=False)
        for _, r in c.head(per_level).iterrows():
            rows.append({"level": level, "cluster": r["cluster_id"], "items": int(r["size"]),
                         "description": r["description"]})
    return markdown_table(rows), rows


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


def gate_section(info: dict, choice: dict | None = None) -> tuple[str, dict]:
    """The pipeline's gates (MLLM against the best cluster-choice baseline on the curated
    held-out split, retriever against in-cluster popularity; issue 15 item 3), the registry
    after them, and — with ``choice`` — the model against the best baseline on all
    serendipitous pairs of held-out contexts."""
    from serendip.report import markdown_table

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


def write_data_report(wd: Path, info: dict) -> Path:
    """report.md / report.json of ``serendip demo --data``: the data and its split, the tree
    (NMI vs labels when they exist, sample descriptions), curation, fine-tuning, the gate,
    scoring, serving, the replay table (every arm, 95% intervals) and the baselines vs the
    MLLM."""
    from serendip.report import Report, markdown_table

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
    cur = _read_json(wd / "curation.json")
    pairs = cur.get("stats", {}).get("pairs", {})
    chosen = cur.get("stats", {}).get("prompt", {}).get("chosen") or cur.get("prompt_chosen")
    rep.add("Serendipitous curation", (
        f"Level l={cur.get('level')}, δ={cur.get('delta')}, top {cur.get('top_k')} context items "
        f"per next cluster, prompt strategy `{cur.get('strategy')}`"
        + (f" ({chosen})" if chosen else "") + ".\n\n"
        + markdown_table([{"pairs": k, "count": v.get("pairs"),
                           "mean satisfaction": v.get("mean_satisfaction")}
                          for k, v in pairs.items()])
        + "\n\n" + _premise(cur)), cur.get("stats", {}))
    meta = _read_json(wd / "mllm" / "champion" / "serendip.json")
    m = meta.get("metrics", {})
    offline = wd / "evaluation" / "mllm_offline.md"
    rep.add("Fine-tuning (curated held-out split)", (
        f"Base `{meta.get('base_model')}`, method `{meta.get('method')}`, "
        f"{meta.get('trainable_params')} trainable parameters.\n\n"
        + markdown_table([{"metric": k, "value": v} for k, v in m.items()])
        + (f"\n\n{offline.read_text()}" if offline.exists() else "")), {"metrics": m})
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
    rep.add("Run", markdown_table([{"step": k, "seconds": v}
                                   for k, v in info.get("timings_s", {}).items()])
            + f"\n\nCached steps reused: {info.get('cached_steps') or 'none'}.",
            {"timings_s": info.get("timings_s"), "size": info.get("size"),
             "preset": info.get("preset"), "data": info.get("data")})
    md, _ = rep.write(wd)
    return md
