"""Replay evaluation on real logs (issue 15 item 4): the split, the cases, every arm, every
metric with intervals — on the committed ml-100k subset (tests/data/ml-100k-subset)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serendip.candidates import CandidateIndex
from serendip.errors import ConfigError, SerendipError
from serendip.evaluation.replay import (
    METRICS,
    ReplayConfig,
    holdout_mask,
    replay_cases,
    replay_stage,
    split_interactions,
    write_replay_split,
)

SUBSET = Path(__file__).parent / "data" / "ml-100k-subset"


def _inter(rows):
    return pa.table({"user_id": [r[0] for r in rows], "context_item_id": [r[1] for r in rows],
                     "next_item_id": [r[2] for r in rows],
                     "satisfaction": [r[3] for r in rows],
                     "ts": pa.array([r[4] for r in rows], pa.timestamp("s"))})


def test_holdout_is_each_users_last_transition_and_days_mode():
    t = _inter([("u1", "a", "b", 0.2, 10), ("u1", "b", "c", 0.4, 30), ("u1", "c", "d", 0.6, 20),
                ("u2", "x", "y", 1.0, 5), ("u3", "p", "q", 0.8, 40), ("u3", "q", "r", 0.8, 40)])
    mask = holdout_mask(t, ReplayConfig())
    # u1: latest ts (30); u2: a single transition stays for training; u3: tie → later row
    assert mask.tolist() == [False, True, False, False, False, True]
    train, held = split_interactions(t, ReplayConfig())
    assert train.num_rows == 4 and held.num_rows == 2
    days = holdout_mask(t, ReplayConfig(holdout_days=15 / 86400))      # ts > 40 − 15
    assert days.tolist() == [False, True, False, False, True, True]
    with pytest.raises(SerendipError):
        holdout_mask(_inter([("u", "a", "b", 1.0, 1)]), ReplayConfig())


def test_cases_carry_the_history_up_to_the_context_and_never_the_target():
    t = _inter([("u1", "a", "b", 0.2, 10), ("u1", "b", "c", 0.4, 20), ("u1", "x", "d", 0.6, 30),
                ("u2", "p", "q", 0.5, 1), ("u2", "q", "r", 0.9, 2)])
    cases = replay_cases(t, holdout_mask(t, ReplayConfig()))
    by_user = {c.user_id: c for c in cases}
    assert by_user["u1"].history == ["a", "b", "c", "x"] and by_user["u1"].target == "d"
    assert by_user["u2"].history == ["p", "q"] and by_user["u2"].target == "r"
    assert by_user["u2"].satisfaction == 0.9


@pytest.mark.parametrize("kw,field", [({"k": 0}, "k"), ({"holdout_days": -1}, "holdout_days"),
                                      ({"serendipitous_share": 2.0}, "serendipitous_share"),
                                      ({"level": 2, "delta": 3}, "delta"),
                                      ({"n_bootstrap": 0}, "n_bootstrap")])
def test_bad_settings_name_the_field(kw, field):
    with pytest.raises(ConfigError) as e:
        ReplayConfig(**kw)
    assert e.value.field == field


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """ml-100k subset → replay split → tree, retriever and an "MLLM" on the training part."""
    from serendip.data.recbole import import_recbole
    from serendip.embeddings import EmbeddingConfig
    from serendip.evaluation.baselines import transition_rankings
    from serendip.retriever import RetrieverConfig, retriever_stage
    from serendip.tree import ClusterConfig, cluster_stage

    base = tmp_path_factory.mktemp("replay")
    raw, wd = base / "raw", base / "wd"
    import_recbole(SUBSET, raw)
    info = write_replay_split(raw, wd, ReplayConfig())
    cluster_stage(wd, wd, ClusterConfig(branching=(3, 2, 3, 2),
                                            embedding=EmbeddingConfig(text_encoder="tfidf")))
    retriever_stage(wd, wd, wd, RetrieverConfig(epochs=2, dim=16, holdout=0, patience=0,
                                                torchscript=False), progress=False)
    # a stand-in for `serendip score`: each item's answers start with its OWN cluster (which
    # the replay must skip), then its transition-ranked candidates
    from serendip.data.io import read_table

    ic, cl = read_table(wd, "item_clusters"), read_table(wd, "clusters")
    index = CandidateIndex.build(ic, cl, 3, 1)
    items = ic.column("item_id").to_pylist()
    ranks = transition_rankings(read_table(wd, "interactions"), index, items)
    own = index.own_cluster(items)
    from serendip.data.schemas import SCHEMAS

    desc = dict(zip(cl.column("cluster_id").to_pylist(), cl.column("description").to_pylist()))
    answers = [[o] + ranks[i] for i, o in zip(items, own)]
    n = len(items)
    pq.write_table(pa.table({"item_id": items, "cluster_ids": answers,
                             "descriptions": [[desc[c] for c in a] for a in answers],
                             "scores": [[1.0 / (j + 1) for j in range(len(a))] for a in answers],
                             "model_version": ["stand-in"] * n, "content_hash": ["h"] * n,
                             "scored_at": pa.array([0] * n, pa.timestamp("s"))}
                            ).cast(SCHEMAS["item_serendipity"]),
                   wd / "item_serendipity.parquet")
    summary = replay_stage(wd, raw, ReplayConfig(n_bootstrap=200), progress=False)
    return raw, wd, info, summary, index


def test_replay_reports_every_arm_and_metric_with_intervals(replayed):
    raw, wd, info, summary, _ = replayed
    assert summary["n_cases"] == info["heldout_transitions"] > 0
    assert summary["heldout_in_training"] == 0
    assert set(summary["arms"]) == {"exploitation", "exploration", "bandit", "transition",
                                    "ours", "blend", "blend_transition"}
    for subset in ("all", "serendipitous_transition", "other_transition"):
        block = summary["subsets"][subset]
        assert block["n_cases"] > 0
        for arm in summary["arms"]:
            for m in METRICS:
                v = block["arms"][arm][m]
                if m == "hit_satisfaction" and v["value"] is None:
                    continue                                # no hit in this subset
                assert v["value"] is not None and len(v["ci95"]) == 2, (subset, arm, m)
                assert v["ci95"][0] <= v["ci95"][1]
    assert (summary["subsets"]["serendipitous_transition"]["n_cases"]
            + summary["subsets"]["other_transition"]["n_cases"]) == summary["n_cases"]
    doc = json.loads((wd / "evaluation" / "replay.json").read_text())
    assert doc["n_cases"] == summary["n_cases"]
    assert "HR@10" in (wd / "evaluation" / "replay.md").read_text()


def test_no_serendipitous_arm_answers_the_context_cluster(replayed):
    """Every item of bandit / transition / ours lies in a candidate cluster of the context (the
    stand-in MLLM's first answer, its own cluster, was skipped and counted)."""
    _, _, _, summary, _ = replayed
    arms = summary["subsets"]["all"]["arms"]
    for arm in ("bandit", "transition", "ours"):
        assert arms[arm]["cluster_serendipity"]["value"] == 1.0, arm
    assert summary["mllm"]["top1_is_own_cluster"] == summary["mllm"]["answered"]
    assert summary["mllm"]["model_versions"] == ["stand-in"]
    assert summary["mllm"]["non_candidate_answers_dropped"] >= summary["mllm"]["answered"]
    # the blend keeps the share: at least 2 of 10 items from a candidate cluster
    assert arms["blend"]["cluster_serendipity"]["value"] >= 0.2
    assert arms["exploitation"]["new_vs_exploitation"]["value"] == 0.0
    assert arms["blend"]["new_vs_exploitation"]["value"] > 0.0


def test_training_on_held_out_transitions_is_reported(replayed):
    raw, wd, _, _, _ = replayed
    s = replay_stage(wd, wd.parent / "raw", ReplayConfig(n_bootstrap=50),
                     out_dir=wd / "evaluation-2", progress=False)
    assert s["heldout_in_training"] == 0
    s = replay_stage(wd, wd, ReplayConfig(n_bootstrap=50),
                     out_dir=wd / "evaluation-3", progress=False)    # models judged on logs they trained on
    assert s["heldout_in_training"] == s["n_cases"]


def test_a_repeated_transition_is_not_a_leak_but_the_held_out_row_is():
    from serendip.evaluation.replay import heldout_leak

    full = _inter([("u1", "a", "b", 0.2, 10), ("u1", "b", "a", 0.4, 20),
                   ("u1", "a", "b", 0.6, 30)])
    train, held = split_interactions(full, ReplayConfig())
    assert heldout_leak(train, held) == 0          # the same pair earlier, at another time
    assert heldout_leak(full, held) == 1


@pytest.mark.slow    # three CLI processes (~10 s of imports each on a loaded 2-core machine)
def test_cli_replay_and_write_split(replayed, tmp_path):
    raw, wd, _, _, _ = replayed
    cmd = [sys.executable, "-m", "serendip.cli", "evaluate", "--replay", "--quiet", "--no-mlflow"]
    out = subprocess.run(cmd + ["--workdir", str(tmp_path / "split"), "--data", str(raw),
                                "--write-split"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["heldout_transitions"] > 0
    out = subprocess.run(cmd + ["--workdir", str(wd), "--data", str(raw), "--out",
                                str(tmp_path / "ev")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "ev" / "replay.json").exists() and "blend" in out.stdout
    bad = subprocess.run(cmd + ["--workdir", str(wd), "--data", str(raw), "--share", "1.5"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "serendipitous_share" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    same = subprocess.run(cmd + ["--workdir", str(raw), "--data", str(raw), "--write-split"],
                          capture_output=True, text=True)
    assert same.returncode == 2 and "--workdir" in same.stderr


def test_replay_metrics_are_deterministic(replayed):
    _, wd, _, summary, _ = replayed
    again = replay_stage(wd, wd.parent / "raw", ReplayConfig(n_bootstrap=200),
                         out_dir=wd / "evaluation-4", progress=False)
    assert again["subsets"] == summary["subsets"]
    assert np.isfinite(summary["subsets"]["all"]["arms"]["ours"]["hr"]["value"])


def test_online_simulation_clusters_are_candidates_never_the_own_cluster(replayed):
    """The online simulation took each item's first scored answer even when it was the item's
    own cluster (the stand-in's first answer here); with the candidate index it is always a
    candidate."""
    from serendip.evaluation.recommenders import serendipitous_clusters

    _, wd, _, _, index = replayed
    items = index.item_ids
    old = serendipitous_clusters(wd, items, None)
    new = serendipitous_clusters(wd, items, None, index)
    own = dict(zip(items, index.own_cluster(items)))
    assert all(old[i] == own[i] for i in old)                 # what the simulation used before
    assert new and index.is_candidate(list(new), list(new.values())).all()
    # every item with candidates keeps one (the stand-in ranks them all after its own cluster)
    assert set(new) == {i for i, c in zip(items, index.candidates(items)) if c}
