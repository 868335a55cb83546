"""Batch scoring: coverage selection, incremental reuse, new-item assignment, SIGKILL + resume,
corrupt chunks, and the errors the issue lists.

(No ``from __future__ import annotations``: KFP reads the test pipeline's annotations.)"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from serendip.data.io import read_table, write_table
from serendip.errors import ConfigError, SerendipError
from serendip.scoring import ChunkStore, ScoringConfig, score_items, select_by_coverage
from serendip.testing.scoring import build_scoring_workdir
from serendip.testing.truth import topic_embedding

CFG = dict(k=1, batch_size=8, chunk_size=32)


@pytest.fixture(scope="module")
def base(synth_dir, tmp_path_factory):
    """A scoring-ready work directory (never scored) and its model directory."""
    wd = tmp_path_factory.mktemp("scoring-base")
    for name in ("items.parquet", "interactions.parquet"):
        shutil.copy(synth_dir / name, wd / name)
    shutil.copytree(synth_dir / "truth", wd / "truth")
    return build_scoring_workdir(wd)


def _copy(base, tmp_path) -> tuple[Path, Path]:
    wd = tmp_path / "wd"
    shutil.copytree(base[0], wd)
    return wd, wd / "mllm" / "tiny"


@pytest.fixture(scope="module")
def predictor(base):
    from serendip.mllm.inference import ClusterPredictor

    return ClusterPredictor.load(base[1])


@pytest.fixture(scope="module")
def reference(base, predictor, tmp_path_factory):
    """One clean full run: the outputs every other run must reproduce."""
    wd = tmp_path_factory.mktemp("scoring-ref") / "wd"
    shutil.copytree(base[0], wd)
    return score_items(wd, predictor, ScoringConfig(**CFG), progress=False)


def test_select_by_coverage(synth_dir):
    items = read_table(synth_dir, "items")
    sel, stats = select_by_coverage(items, 0.8)
    imp = np.sort(items.column("impressions").to_numpy())[::-1]
    n = sel.num_rows
    assert imp[:n].sum() >= 0.8 * imp.sum() > imp[:n - 1].sum()       # smallest such prefix
    assert sel.column("impressions").to_pylist() == list(imp[:n])
    assert stats["coverage_achieved"] >= 0.8 and n < items.num_rows / 2   # Zipf: few items
    assert select_by_coverage(items, 1.0)[0].num_rows == items.num_rows
    for bad in (0, -0.1, 1.01):
        with pytest.raises(ConfigError, match="coverage"):
            select_by_coverage(items, bad)
    with pytest.raises(SerendipError, match="empty"):
        select_by_coverage(items.slice(0, 0), 0.8)


def test_full_run_output(reference, predictor, base):
    t, stats = reference.table, reference.stats
    items = read_table(base[0], "items")
    expect = select_by_coverage(items, 0.8)[0].column("item_id").to_pylist()
    assert t.column("item_id").to_pylist() == expect                   # popularity order, once
    assert stats["scored"] == len(expect) and stats["reused"] == 0
    assert set(pc.list_flatten(t.column("cluster_ids")).to_pylist()) <= set(predictor.cluster_ids)
    assert len(set(pc.list_flatten(t.column("cluster_ids")).to_pylist())) > 1   # input-dependent
    assert set(t.column("model_version").to_pylist()) == {predictor.model_version}
    assert all(len(c) == 1 for c in t.column("cluster_ids").to_pylist())


def test_incremental_reuse_changed_new_and_new_version(base, predictor, reference, tmp_path):
    wd, _ = _copy(base, tmp_path)
    cfg = ScoringConfig(**CFG)
    first = score_items(wd, predictor, cfg)
    again = score_items(wd, predictor, cfg)
    assert again.stats["scored"] == 0 and again.stats["reused"] == first.table.num_rows
    assert again.table.equals(first.table)

    # 3 changed titles among the scored items + 2 brand-new popular items (copies of v-items)
    items = read_table(wd, "items").to_pylist()
    top = first.table.column("item_id").to_pylist()
    changed = set(top[5:8])
    by_id = {r["item_id"]: r for r in items}
    for i in changed:
        by_id[i]["title"] += " remix"
    new = [dict(by_id[top[0]], item_id=top[0] + "~new"),
           dict(by_id[top[40]], item_id=top[40] + "~new", impressions=by_id[top[1]]["impressions"])]
    write_table(wd, "items", pa.Table.from_pylist(items + new))

    third = score_items(wd, predictor, cfg, embed=lambda t: topic_embedding(wd, t))
    s = third.stats
    assert s["assigned_new_items"] == 2
    ic = {r["item_id"]: r for r in read_table(wd, "item_clusters").to_pylist()}
    for row in new:   # placed in the tree where their topic lives
        src = row["item_id"].split("~")[0]
        assert [ic[row["item_id"]][f"c{j}"] for j in range(1, 5)] == \
               [ic[src][f"c{j}"] for j in range(1, 5)]
    # ... by the one placement path (serendip.tree.assign_new_items), row for row
    from serendip.tree import assign_new_items

    placed = assign_new_items(wd, pa.Table.from_pylist(new), embed=lambda t: topic_embedding(wd, t))
    assert placed.to_pylist() == [ic[r["item_id"]] for r in new]
    fresh = set(third.table.column("item_id").to_pylist()) - set(top)
    assert {r["item_id"] for r in new} <= fresh
    assert s["scored"] == len(changed) + len(fresh)
    assert s["reused"] == third.table.num_rows - s["scored"]
    old = {r["item_id"]: r for r in first.table.to_pylist()}
    for r in third.table.to_pylist():
        if r["item_id"] in old and r["item_id"] not in changed:
            assert r == old[r["item_id"]]                               # reused verbatim

    predictor.model_version, version = "other-version", predictor.model_version
    try:
        fourth = score_items(wd, predictor, cfg)
    finally:
        predictor.model_version = version
    assert fourth.stats["reused"] == 0 and fourth.stats["scored"] == third.table.num_rows
    assert set(fourth.table.column("model_version").to_pylist()) == {"other-version"}

    # more clusters per item than the stored rows hold → rescored; fewer → reused, cut to k
    wider = score_items(wd, predictor, ScoringConfig(**{**CFG, "k": 2}), progress=False)
    assert wider.stats["scored"] == wider.table.num_rows
    assert {len(c) for c in wider.table.column("cluster_ids").to_pylist()} == {2}
    narrow = score_items(wd, predictor, cfg)
    assert narrow.stats["scored"] == 0
    assert narrow.table.column("cluster_ids").to_pylist() == [
        c[:1] for c in wider.table.column("cluster_ids").to_pylist()]


def _same_outputs(a: pa.Table, b: pa.Table) -> None:
    """Equal rows up to float noise in scores (batches of other sizes pad differently)."""
    exact = ["item_id", "cluster_ids", "descriptions", "model_version", "content_hash"]
    assert a.select(exact).equals(b.select(exact))
    np.testing.assert_allclose(pc.list_flatten(a.column("scores")).to_numpy(),
                               pc.list_flatten(b.column("scores")).to_numpy(), rtol=1e-4)


def _committed(wd: Path) -> int:
    try:
        return len(json.loads((wd / "scoring" / "manifest.json").read_text())["chunks"])
    except (OSError, ValueError, KeyError):
        return 0


def test_sigkill_resume_loses_nothing_duplicates_nothing(base, predictor, reference, tmp_path):
    wd, model_dir = _copy(base, tmp_path)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "serendip.cli", "score", "--workdir", str(wd), "--model",
           str(model_dir), "--no-feast", "--quiet", "--k", "1", "--batch-size", "4",
           "--chunk-size", "8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 240
    while _committed(wd) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (wd / "item_serendipity.parquet").exists()              # killed mid-way
    committed = _committed(wd)
    assert committed >= 3
    # corrupt the first committed chunk: it must be detected and redone
    first = wd / "scoring" / "chunk-000000.parquet"
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))
    (wd / "scoring" / ".chunk-999999.parquet.tmp").write_bytes(b"half a write")

    resumed = score_items(wd, predictor, ScoringConfig(**CFG), progress=False)
    s = resumed.stats
    assert s["corrupt_chunks"] == ["chunk-000000.parquet"]
    assert s["resumed_chunks"] == committed - 1
    assert s["reused"] == 8 * (committed - 1)                          # nothing committed lost
    assert s["scored"] == reference.table.num_rows - s["reused"]
    ids = resumed.table.column("item_id").to_pylist()
    assert len(ids) == len(set(ids))                                    # nothing duplicated
    _same_outputs(resumed.table, reference.table)                      # same as a clean run
    assert not list((wd / "scoring").glob("*chunk-*"))                  # chunks cleared


def test_chunk_store_rejects_bad_manifest(tmp_path):
    store = ChunkStore(tmp_path)
    (store.dir / "manifest.json").write_text("{not json")
    table, stats = store.load()
    assert table is None and stats["chunks"] == 0
    store.lock()
    try:
        with pytest.raises(SerendipError, match="another scoring run"):
            ChunkStore(tmp_path).lock()
    finally:
        store.unlock()


def test_unknown_model_alias(base, tmp_path, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    from serendip.cli import main

    wd, _ = _copy(base, tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["score", "--workdir", str(wd), "--model", "models:/serendip-mllm@nope"]) == 2
    err = capsys.readouterr().err
    assert "no registered model 'serendip-mllm'" in err and len(err.strip().splitlines()) == 1


def test_errors(base, predictor, tmp_path):
    wd, _ = _copy(base, tmp_path)
    with pytest.raises(ConfigError, match="coverage"):
        score_items(wd, predictor, ScoringConfig(coverage=1.5))
    items = read_table(wd, "items")
    # items without media, among the popular ones
    rows = items.to_pylist()
    top = max(rows, key=lambda r: r["impressions"])
    top["thumbnail"], top["frames"] = None, []
    write_table(wd, "items", pa.Table.from_pylist(rows, schema=items.schema))
    with pytest.raises(SerendipError, match="neither thumbnail nor frames"):
        score_items(wd, predictor, ScoringConfig(**CFG, max_error_rate=0))
    with pytest.raises(ConfigError, match="max_error_rate"):
        score_items(wd, predictor, ScoringConfig(**CFG, max_error_rate=1.5))
    # empty corpus
    pq.write_table(items.slice(0, 0), wd / "items.parquet")
    with pytest.raises(SerendipError, match="empty"):
        score_items(wd, predictor, ScoringConfig(**CFG), progress=False)
    # the CLI turns bad input into one line and exit code 2
    from serendip.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["score", "--workdir", str(wd), "--coverage", "0"])
    assert exc.value.code == 2
    assert main(["score", "--workdir", str(wd), "--model", str(tmp_path / "nope")]) == 2


@pytest.mark.slow
def test_kfp_components_local(base, tmp_path, monkeypatch):
    """train_retriever → score_shard (one shard of one: the whole corpus; persistent state dir)
    → materialize under kfp.local."""
    pytest.importorskip("kfp")
    from kfp import dsl, local
    from kfp.dsl import Dataset

    from serendip.platform.features import OnlineFeatures
    from serendip.platform.kfp.components.retriever import train_retriever
    from serendip.platform.kfp.components.scoring import materialize, score_shard

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    wd, model_dir = _copy(base, tmp_path)
    state = tmp_path / "state"

    @dsl.pipeline
    def scoring(data_uri: str, model_uri: str, state_dir: str, mlflow_uri: str):
        data = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=False)
        train_retriever(data=data.output, tree=data.output, mlflow_uri=mlflow_uri,
                        settings={"epochs": 2})
        bs = score_shard(data=data.output, tree=data.output, model_uri=model_uri,
                         state_dir=state_dir, k=1, chunk_size=32)
        materialize(scores=bs.outputs["scores"], feature_root=state_dir)

    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path / "kfp"), raise_on_error=True)
    scoring(data_uri=str(wd), model_uri=str(model_dir), state_dir=str(state),
            mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    scored = read_table(state / "shard-0", "item_serendipity")
    assert scored.num_rows == select_by_coverage(read_table(wd, "items"), 0.8)[0].num_rows
    row = OnlineFeatures(state).get(scored.column("item_id").to_pylist()[:1])[0]
    assert row["found"] and row["cluster_ids"] == scored.column("cluster_ids")[0].as_py()


def test_bad_rows_go_to_the_error_table_and_a_rerun_retries_them(base, predictor, reference,
                                                                   tmp_path, capsys):
    """Issue 12 case 16: one item whose media file is missing, one whose file is not an image
    and one with no media at all used to stop the whole batch. The rest are scored, the three
    are listed with their reasons, the count is reported; a rerun after the fix retries only
    them; above max_error_rate the run fails (scored chunks kept)."""
    from serendip.cli import main
    from serendip.scoring import ERRORS_FILE

    wd, _ = _copy(base, tmp_path)
    items = read_table(wd, "items")
    rows = items.to_pylist()
    ref_ids = reference.table.column("item_id").to_pylist()
    bad = {ref_ids[0]: "missing", ref_ids[5]: "garbage", ref_ids[9]: "none"}
    (wd / "media").mkdir()
    (wd / "media" / "garbage.png").write_bytes(b"not an image at all")
    for r in rows:
        kind = bad.get(r["item_id"])
        if kind == "missing":
            r["thumbnail"], r["frames"] = "media/gone.png", ["media/gone.png"] * 4
        elif kind == "garbage":
            r["thumbnail"], r["frames"] = "media/garbage.png", ["media/garbage.png"] * 4
        elif kind == "none":
            r["thumbnail"], r["frames"] = None, []
    write_table(wd, "items", pa.Table.from_pylist(rows, schema=items.schema))

    code = main(["score", "--workdir", str(wd), "--k", "1", "--batch-size", "8",
                 "--chunk-size", "32", "--no-feast", "--quiet", "--model", str(base[1]),
                 "--max-error-rate", "0.05"])
    out, err = capsys.readouterr()
    assert code == 0, err
    stats = json.loads(out)
    assert stats["failed"] == 3 and "3 item(s) could not be scored" in err
    errors = pq.read_table(wd / ERRORS_FILE).to_pylist()
    reasons = {e["item_id"]: (e["stage"], e["reason"]) for e in errors}
    assert set(reasons) == set(bad)
    assert reasons[ref_ids[0]][0] == "predict" and "does not exist" in reasons[ref_ids[0]][1]
    assert reasons[ref_ids[5]][0] == "predict"
    assert reasons[ref_ids[9]] [0] == "inputs" and "neither thumbnail" in reasons[ref_ids[9]][1]
    scored = read_table(wd, "item_serendipity")
    assert set(scored.column("item_id").to_pylist()) == set(ref_ids) - set(bad)
    good = {r["item_id"]: r["cluster_ids"] for r in reference.table.to_pylist()}
    assert all(good[r["item_id"]] == r["cluster_ids"] for r in scored.to_pylist())

    write_table(wd, "items", items)                          # the data is fixed: rerun
    again = score_items(wd, predictor, ScoringConfig(**CFG, max_error_rate=0))
    assert again.stats["failed"] == 0 and again.stats["scored"] == 3
    assert again.stats["reused"] == len(ref_ids) - 3
    assert pq.read_table(wd / ERRORS_FILE).num_rows == 0
    assert again.table.column("item_id").to_pylist() == ref_ids

    write_table(wd, "items", pa.Table.from_pylist(rows, schema=items.schema))
    (wd / "item_serendipity.parquet").unlink()
    with pytest.raises(SerendipError, match=r"of \d+ selected items failed.*max_error_rate"):
        score_items(wd, predictor, ScoringConfig(**CFG, max_error_rate=0.001))
    assert pq.read_table(wd / ERRORS_FILE).num_rows >= 1


def test_answers_are_only_the_contexts_serendipitous_candidates(base, predictor, tmp_path):
    """Issue 15 item 1: no scored answer is the item's own cluster or a non-sibling (paper §2,
    delta 1 here: no curation.json); the unrestricted model does name such clusters, so the
    restriction is what keeps them out — with a predictor that ranks candidates and with one
    that cannot (its answers filtered)."""
    from serendip.candidates import sibling_map
    from serendip.scoring.inputs import predictor_inputs

    wd, _ = _copy(base, tmp_path)
    level = predictor.level
    clusters, ic = read_table(wd, "clusters"), read_table(wd, "item_clusters")
    sibs = sibling_map(clusters, level, 1)
    own = dict(zip(ic.column("item_id").to_pylist(), ic.column(f"c{level}").to_pylist()))
    items = select_by_coverage(read_table(wd, "items"), 0.8)[0]
    inputs, _, _ = predictor_inputs(items, ic, clusters, level, predictor.prompt_config.uses_images)
    free = predictor.predict([x for x in inputs if x], k=3, constrained=True)
    ids = [i for i, x in zip(items.column("item_id").to_pylist(), inputs) if x]
    assert any(p.cluster_id not in sibs[own[i]] for i, ps in zip(ids, free) for p in ps)

    class NoCandidates:                      # a predictor without the candidates argument
        def __init__(self, inner):
            self.inner = inner
            self.level, self.prompt_config = inner.level, inner.prompt_config
            self.model_version, self.cluster_ids = "plain", inner.cluster_ids
            self.batch_size = inner.batch_size

        def predict(self, inputs, k=1, constrained=True):
            return self.inner.predict(inputs, k=k, constrained=constrained)

    for pred in (predictor, NoCandidates(predictor)):
        # a filtered answer list may come out empty: that item fails (error table), never an
        # empty row; the candidate-ranking predictor answers every item
        res = score_items(wd, pred, ScoringConfig(**{**CFG, "k": 3, "max_error_rate": 1.0}), progress=False)
        assert res.stats["delta"] == 1 and res.stats["answers_restricted_to_candidates"]
        rows = res.table.to_pylist()
        assert rows and all(r["cluster_ids"] for r in rows)
        if pred is predictor:
            assert res.stats["failed"] == 0 and len(rows) == len(ids)
        for r in rows:
            assert own[r["item_id"]] not in r["cluster_ids"], r
            assert set(r["cluster_ids"]) <= set(sibs[own[r["item_id"]]]), r
