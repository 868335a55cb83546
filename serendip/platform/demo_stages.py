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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    ports = {k: _free_port() for k in ("http", "grpc", "thttp", "tgrpc", "tmetrics")}
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
    from serendip.platform.pipelines import log_path_for

    log = log_path_for(wd, name)
    print(f"  kfp.local, one line per task; full log: {log}", flush=True)
    return log


def training(wd: Path, p: DemoSize, seed: int) -> dict:
    """The training pipeline via kfp.local, then its artifacts published into ``wd``."""
    from serendip.platform.pipelines import run_local

    params = {
        "branching": "/".join(str(b) for b in p.branching),
        "finetune_settings": {"steps": p.finetune_steps, "seed": seed,
                              "batch_size": p.finetune_batch,
                              "eval_every": max(25, p.finetune_steps // 4)},
        "retriever_settings": {"epochs": p.retriever_epochs, "seed": seed},
        **p.pipeline,
    }
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
    summary["registry"] = _registry_state()
    return summary


def _replace_dir(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.publish"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def _registry_state() -> dict:
    from serendip.platform import registry

    state = {}
    for name in ("serendip-mllm", "serendip-retriever"):
        state[name] = {alias: registry.alias_version(name, alias)
                       for alias in ("champion", "challenger")}
    return state


def scoring(wd: Path, p: DemoSize) -> dict:
    """The scoring pipeline via kfp.local (incremental state under ``wd/scoring-state``), its
    merged table published into ``wd``, Feast materialized into ``wd/feature_repo``."""
    from serendip.platform.pipelines import run_local

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
    from serendip.cli import main

    code = main(["evaluate", "--workdir", str(wd), "--ablation", "--steps", str(p.ablation_steps),
                 "--eval-every", str(max(25, p.ablation_steps // 4)),
                 "--set", f"batch_size={p.ablation_batch}", "--workers", "0", "--out",
                 str(wd / "evaluation" / "ablation")])
    if code != 0:
        raise RuntimeError(f"ablation failed with exit code {code}")
    summary_path = wd / "evaluation" / "ablation" / "results.json"
    data = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    (wd / "evaluation").mkdir(exist_ok=True)
    (wd / "evaluation" / "ablation.json").write_text(json.dumps(data, indent=2, default=str))
    return {"variants": sorted(data.get("results", {}))}


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
    rep.add("Batch scoring and Feast", markdown_table([info.get("scoring", {})]),
            info.get("scoring"))
    calls = info.get("serving", {}).get("calls", [])
    rep.add("Serving (recommend calls)", (
        f"Server ready in {info.get('serving', {}).get('ready_s')} s.\n\n"
        + markdown_table([{"context item": c["item"], "protocol": c["protocol"],
                           "cluster": c.get("cluster_id"), "description": c.get("description"),
                           "items": ", ".join(c.get("item_ids", [])[:5])} for c in calls])),
        info.get("serving"))
    sim_md = wd / "evaluation" / "online_sim.md"
    if sim_md.exists():
        from serendip.evaluation.online_sim import METRICS

        sim = _read_json(wd / "evaluation" / "online_sim.json")
        rep.add("Online simulation vs baselines (paper Fig. 6)",
                sim_md.read_text() + "\n\n" + _verdict(sim, METRICS)
                + "\n\n![relative change](evaluation/online_sim.png)", sim)
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
