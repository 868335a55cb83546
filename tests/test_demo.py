"""The whole system end to end: `serendip demo --size small` in a subprocess (synth → training
pipeline via kfp.local → promotion → scoring pipeline → Feast → real server → recommend over
HTTP and gRPC → online simulation → report), then a second run that reuses every step."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.timeout(2400)  # one fixture runs the whole system


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    wd = tmp_path_factory.mktemp("demo")
    p = subprocess.run([sys.executable, "-m", "serendip.cli", "demo", "--workdir", str(wd),
                        "--size", "small"], capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return wd, p.stdout


def test_demo_writes_every_table_and_the_report(demo):
    wd, out = demo
    for name in ("items", "interactions", "clusters", "item_clusters", "examples",
                 "item_serendipity"):
        assert (wd / f"{name}.parquet").exists(), name
    for path in ("mlflow/mlflow.db", "feature_repo/feature_store.yaml", "retriever",
                 "model_repository/mllm/config.pbtxt", "model_repository/retriever/config.pbtxt",
                 "report.md", "report.json", "evaluation/online_sim.png"):
        assert (wd / path).exists(), path
    report = json.loads((wd / "report.json").read_text())
    sim = report["online_simulation_vs_baselines__paper_fig__6"]
    assert set(sim["models"]) == {"exploitation", "exploration", "bandit", "serendip"}
    assert sim["models"]["serendip"]["novelty"]["mean"] > 0
    md = (wd / "report.md").read_text()
    for heading in ("Cluster tree", "Serendipitous curation", "Fine-tuning", "Serving",
                    "Online simulation"):
        assert f"## {heading}" in md
    assert "baseline: random sibling" in md and "the better baseline" in md
    assert "premise holds at" in md


def test_demo_recommendations_lie_in_the_returned_cluster(demo):
    wd, _ = demo
    report = json.loads((wd / "report.json").read_text())
    calls = report["serving__recommend_calls"]["calls"]
    assert {c["protocol"] for c in calls} == {"http", "grpc"}
    ic = pq.read_table(wd / "item_clusters.parquet").to_pandas().set_index("item_id")
    for call in calls:
        level = call["cluster_id"].count(".") + 1
        assert call["item_ids"], call
        assert all(ic.loc[i, f"c{level}"] == call["cluster_id"] for i in call["item_ids"])


def test_demo_model_is_the_registry_champion(demo):
    wd, _ = demo
    report = json.loads((wd / "report.json").read_text())
    reg = report["fine_tuning__held_out_split"]["registry"]
    assert reg["serendip-mllm"]["champion"] is not None
    assert reg["serendip-retriever"]["champion"] is not None


def test_rerun_reuses_cached_steps(demo):
    wd, _ = demo
    p = subprocess.run([sys.executable, "-m", "serendip.cli", "demo", "--workdir", str(wd),
                        "--size", "small"], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    for step in ("synth", "training-pipeline", "scoring-pipeline", "online-sim"):
        assert f"[{step}] cached" in p.stdout
