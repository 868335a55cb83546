"""The demo's stages, one function each, called by :mod:`serendip.platform.demo.flow`.

The models are trained and scored by the KFP pipelines run with ``kfp.local``
(:mod:`serendip.platform.kfp.runner`), whose components call the same library stage entries
as the CLI; their artifacts are then published into the work directory, where the serving,
simulation and evaluation stages read them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from serendip.data.io import atomic_write_bytes
from serendip.platform.demo.sizes import DemoSize


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
        (_replace_dir if path.is_dir() else _replace_file)(path, wd / path.name)
        copied.append(path.name)
    return copied


def _replace_file(src: str | Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` under a temporary name, then rename: never half-written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.publish"
    shutil.copy2(src, tmp)
    os.replace(tmp, dest)


def _replace_dir(src: Path, dest: Path) -> None:
    """Copy the directory ``src`` to ``dest`` under a temporary name, then swap it in."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.publish"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


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
        # The demo needs champions to serve and replay; the gate's own verdict is kept
        # (the promote message says FORCED ... against the gate: <reasons>) and reported.
        "force_promote": True,
    }
    out = run_local("training", wd, None, params, log_path=_pipeline_log(wd, "training"))
    published = {}
    for key in ("tree", "examples"):
        published[key] = _publish(out[key], wd)
    _publish(out["retriever"], wd)
    _replace_dir(Path(out["model"]), wd / "mllm" / "champion")
    _replace_dir(Path(out["repository"]), wd / "model_repository")
    _replace_file(out["offline_report"], wd / "evaluation" / "mllm_offline.md")
    summary = {"published": published, "outputs": {k: str(v) for k, v in out.items()}}
    summary["registry"] = _registry_state(wd)
    summary["gate"] = _gate_outputs(Path(out["model"]).parents[1])
    return summary


def _pipeline_log(wd: Path, name: str) -> Path:
    from serendip.platform.kfp.runner import log_path_for

    log = log_path_for(wd, name)
    print(f"  kfp.local, one line per task; full log: {log}", flush=True)
    return log


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
    """(l, δ) the demo's work directory was curated with (curation.json, read strictly)."""
    from serendip.curation import read_curation

    cur = read_curation(wd)
    return cur.level, cur.delta


def ablation(wd: Path, p: DemoSize) -> dict:
    """The paper's prompt / frames / thumbnail ablations (Figures 3–5), at demo scale."""
    from serendip.locks import workdir_lock
    from serendip.mllm.ablation import AblationConfig, ablation_stage
    from serendip.mllm.config import FinetuneConfig
    from serendip.platform.tracking import MLflowTracker

    cfg = AblationConfig(steps=p.ablation_steps, eval_every=max(25, p.ablation_steps // 4),
                         finetune=FinetuneConfig(batch_size=p.ablation_batch))
    with workdir_lock(wd, "ablation", "evaluate"):
        ablation_stage(wd, wd / "evaluation" / "ablation", cfg, tracker=MLflowTracker(wd),
                       workers=0)
    summary_path = wd / "evaluation" / "ablation" / "results.json"
    data = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    atomic_write_bytes(wd / "evaluation" / "ablation.json",
                       json.dumps(data, indent=2, default=str).encode())
    return {"variants": sorted(data.get("results", {}))}


def replay_split(wd: Path, src: Path) -> dict:
    """Hold out each user's last transition of ``src`` BEFORE any model is trained: ``items``
    and the training interactions go into ``wd`` (every later stage reads only those), item
    labels (and a synthetic platform's ``truth/``) are copied, and relative media paths keep
    resolving against ``src`` (``media_base.txt``)."""
    from serendip.data.labels import ITEM_LABELS
    from serendip.data.media import MEDIA_BASE_FILE
    from serendip.evaluation.replay import ReplayConfig, write_replay_split

    out = write_replay_split(src, wd, ReplayConfig())
    truth = src / "truth"
    if truth.is_dir():                  # the synthetic platform's ground truth
        _replace_dir(truth, wd / "truth")
    labels = src / f"{ITEM_LABELS}.parquet"
    if labels.is_file():
        _replace_file(labels, wd / labels.name)
        out["item_labels"] = True
    atomic_write_bytes(wd / MEDIA_BASE_FILE, (str(src) + "\n").encode())
    print(f"  held out {out['heldout_transitions']} transitions ({out['holdout']}); training "
          f"on {out['train_transitions']}")
    return out


def replay_evaluation(wd: Path, src: Path, seed: int) -> dict:
    """The replay of ``src``'s held-out transitions through every arm (the fine-tuned model
    ranks each context's candidate clusters by likelihood), and the cluster-choice baselines
    against that model on the training split; both written under ``wd/evaluation``."""
    from serendip.evaluation.baselines import baselines_stage
    from serendip.evaluation.replay import ReplayConfig, replay_stage
    from serendip.mllm.models import load_predictor

    level, delta = _level_delta(wd)
    predictor = load_predictor(wd / "mllm" / "champion", wd)
    rep = replay_stage(wd, src, ReplayConfig(level=level, delta=delta, seed=seed),
                       predictor=predictor)
    base = baselines_stage(wd, predictor=predictor)
    atomic_write_bytes(wd / "evaluation" / "baselines.json",
                       json.dumps(base, indent=2, default=str).encode())
    return {"n_cases": rep["n_cases"], "heldout_in_training": rep["heldout_in_training"],
            "seconds": rep["seconds"], "level": level, "delta": delta}
