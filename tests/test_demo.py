"""The whole system end to end: `serendip demo --size small` in a subprocess (synth → training
pipeline via kfp.local → promotion → scoring pipeline → Feast → real server → recommend over
HTTP and gRPC → online simulation → report), then a second run that reuses every step; and
`serendip demo --data` on the committed ml-100k subset (imported with `serendip import
recbole`): replay split first, the whole flow on the training split, replay evaluation."""

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

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
    assert {"exploitation", "exploration", "bandit", "serendip", "blend"} <= set(sim["models"])
    assert sim["models"]["serendip"]["novelty"]["mean"] > 0
    md = (wd / "report.md").read_text()
    for heading in ("Cluster tree", "Serendipitous curation", "Fine-tuning", "Serving",
                    "Online simulation"):
        assert f"## {heading}" in md
    assert "baseline: random sibling" in md and "the better baseline" in md
    assert "premise holds at" in md
    # each user's last transition was held out before training and replayed at the end
    replay = report["replay_evaluation__held_out_last_transitions"]
    assert replay["heldout_in_training"] == 0 and replay["n_cases"] > 0
    assert {"exploitation", "ours", "blend"} <= set(replay["subsets"]["all"]["arms"])
    full = pq.read_table(wd / "platform" / "interactions.parquet")
    assert pq.read_table(wd / "interactions.parquet").num_rows == full.num_rows - replay["n_cases"]
    assert "## Promotion gate" in md and "## Replay evaluation" in md


def test_demo_recommendations_lie_in_the_returned_cluster(demo):
    wd, _ = demo
    report = json.loads((wd / "report.json").read_text())
    calls = report["serving__recommend_calls"]["calls"]
    assert {c["protocol"] for c in calls} == {"http", "grpc"}
    ic = pq.read_table(wd / "item_clusters.parquet").to_pandas().set_index("item_id")
    for call in calls:
        _assert_serendipitous_items_in_cluster(call, ic)


def _assert_serendipitous_items_in_cluster(call, ic):
    """The blended slate: the items labelled ``serendipitous`` lie in the returned cluster."""
    level = call["cluster_id"].count(".") + 1
    sources = call.get("item_sources") or ["serendipitous"] * len(call["item_ids"])
    ours = [i for i, s in zip(call["item_ids"], sources) if s == "serendipitous"]
    assert ours, call
    assert all(ic.loc[i, f"c{level}"] == call["cluster_id"] for i in ours), call


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
    for step in ("synth", "replay-split", "training-pipeline", "scoring-pipeline", "online-sim",
                 "replay-evaluation"):
        assert f"[{step}] cached" in p.stdout


# ------------------------------------------------------------------ --data: your own tables
SUBSET = Path(__file__).parent / "data" / "ml-100k-subset"


def _cli(*argv, timeout=1500):
    return subprocess.run([sys.executable, "-m", "serendip.cli", *argv], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("case,says", [("missing", "is not a directory"),
                                       ("no-interactions", "has no interactions table"),
                                       ("is-workdir", "is the work directory")])
def test_demo_data_validation_is_one_line_exit_2(tmp_path, case, says):
    data = tmp_path / "raw"
    wd = tmp_path / "wd"
    if case != "missing":
        data.mkdir()
        (data / "items.csv").write_text("item_id,title\n1,A\n")
    if case == "is-workdir":
        (data / "interactions.csv").write_text("x\n")
        wd = data
    from serendip.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["demo", "--data", str(data), "--workdir", str(wd), "--size", "small"])
    assert code == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and "--data" in lines[0] and says in lines[0], err.getvalue()
    assert not (tmp_path / "wd").exists()          # refused before anything was written


@pytest.fixture(scope="module")
def data_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("data-demo")
    p = _cli("import", "recbole", "--src", str(SUBSET), "--out", str(root / "raw"))
    assert p.returncode == 0, p.stderr[-2000:]
    p = _cli("demo", "--data", str(root / "raw"), "--workdir", str(root / "wd"),
             "--size", "small")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return root, p.stdout


@pytest.mark.slow
def test_demo_on_own_tables_trains_on_the_replay_split_and_reports(data_demo):
    import pyarrow.parquet as pq

    root, out = data_demo
    wd = root / "wd"
    full = pq.read_table(root / "raw" / "interactions.parquet")
    train = pq.read_table(wd / "interactions.parquet")
    report = json.loads((wd / "report.json").read_text())
    split = report["data_and_replay_split"]
    # every user's last transition left the training logs before any stage ran
    assert split["heldout_transitions"] > 0
    assert train.num_rows == full.num_rows - split["heldout_transitions"]
    replay = report["replay_evaluation__held_out_last_transitions"]
    assert replay["n_cases"] == split["heldout_transitions"]
    arms = replay["subsets"]["all"]["arms"]
    assert {"exploitation", "exploration", "bandit", "ours", "blend"} <= set(arms)
    for arm, m in arms.items():
        assert m["hr"]["ci95"] is not None and m["ndcg"]["ci95"] is not None, arm
    assert json.loads((wd / "evaluation" / "replay.json").read_text())[
        "heldout_in_training"] == 0
    # text-only tables: the curation stage chose the text prompt
    assert json.loads((wd / "curation.json").read_text())["prompt"]["strategy"] == "text"
    base = report["baselines_vs_the_mllm__which_candidate_cluster_users_chose_next"]
    assert base["summary"] and all("model_recall" in v for v in base["summary"].values())
    assert "beats_best_baseline" in report["promotion_gate"]
    tree = report["cluster_tree"]
    assert tree["labels"]["level1"]["nmi"] >= 0 and tree["sample_descriptions"]
    md = (wd / "report.md").read_text()
    for heading in ("Replay evaluation", "Baselines vs the MLLM", "Promotion gate",
                    "Cluster tree", "Serving"):
        assert f"## {heading}" in md
    assert "Not run here: the online simulation and the ablations" in md
    assert "## Online simulation" not in md and not (wd / "truth").exists()
    calls = report["serving__recommend_calls"]["calls"]
    assert {c["protocol"] for c in calls} == {"http", "grpc"}
    ic = pq.read_table(wd / "item_clusters.parquet").to_pandas().set_index("item_id")
    for call in calls:
        _assert_serendipitous_items_in_cluster(call, ic)
