"""The sequence retriever: cluster restriction, seen-item exclusion, fallbacks, export, and that
it beats popularity within the true next cluster on held-out sessions."""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mllm_truth import truth_tables

from serendip.errors import ConfigError, SerendipError
from serendip.retriever import Retriever, RetrieverConfig, train_retriever, user_sequences

FAST = dict(epochs=12, holdout=3, seed=0)


@pytest.fixture(scope="module")
def trained(synth_dir, tmp_path_factory):
    _, _, ic = truth_tables(synth_dir)
    inter = pq.read_table(synth_dir / "interactions.parquet")
    out = tmp_path_factory.mktemp("retriever")
    result = train_retriever(inter, ic, RetrieverConfig(**FAST), out, progress=False)
    return result, ic, inter, out


def _cluster_members(ic: pa.Table) -> dict[str, set[str]]:
    members: dict[str, set[str]] = {}
    for row in ic.to_pylist():
        for lvl in ("c1", "c2", "c3", "c4"):
            members.setdefault(row[lvl], set()).add(row["item_id"])
    return members


def test_user_sequences_chain_sessions():
    t = pa.table({"user_id": ["u1", "u1", "u1", "u2"],
                  "context_item_id": ["a", "b", "x", "p"],
                  "next_item_id": ["b", "c", "y", "q"],
                  "ts": pa.array([3, 4, 9, 1], pa.int64()).cast(pa.timestamp("us", tz="UTC"))})
    assert user_sequences(t) == {"u1": ["a", "b", "c", "x", "y"], "u2": ["p", "q"]}


def test_beats_popularity_within_true_next_cluster(trained):
    result, *_ = trained
    ev = result.metrics["eval"]
    assert ev["n_cases"] >= 100
    for level in (1, 2, 3):          # level 4 (one leaf) is popularity's home ground
        m, p = ev[f"level{level}"]["model"], ev[f"level{level}"]["popularity"]
        assert m["ndcg@10"] > p["ndcg@10"], (level, m, p)
    for level in (1, 2):
        m, p = ev[f"level{level}"]["model"], ev[f"level{level}"]["popularity"]
        assert m["hit@10"] > p["hit@10"], (level, m, p)
    # the gate metric is the eval level's NDCG, recorded in the saved config
    cfg = json.loads((trained[3] / "config.json").read_text())
    assert cfg["metrics"]["ndcg@10"] == pytest.approx(ev["level3"]["model"]["ndcg@10"])


def test_never_outside_cluster_never_seen(trained):
    result, ic, _, _ = trained
    r = result.retriever
    members = _cluster_members(ic)
    ids = ic.column("item_id").to_pylist()
    rng = random.Random(0)
    cids = rng.sample(sorted(members), 40)
    hists = []
    for cid in cids:  # histories that overlap the cluster, so exclusion is exercised
        inside = sorted(members[cid])
        hists.append(rng.sample(inside, min(len(inside) // 2, 8)) + rng.sample(ids, 5))
    for k in (1, 10, 10_000):
        batch = r.retrieve_batch(hists, cids, k)
        for h, cid, got in zip(hists, cids, batch):
            items = [i for i, _ in got]
            scores = [s for _, s in got]
            assert set(items) <= members[cid]
            assert not set(items) & set(h)
            assert len(items) == len(set(items)) == min(k, len(members[cid] - set(h)))
            assert scores == sorted(scores, reverse=True)
            assert got == r.retrieve(h, cid, k)          # batch == one by one


def test_fallbacks_and_edges(trained):
    result, ic, _, _ = trained
    r = result.retriever
    members = _cluster_members(ic)
    leaf = sorted(c for c in members if c.count(".") == 3)[0]
    h = sorted(members[sorted(members)[0]])[:4]
    assert r.retrieve(h + ["no-such-item"], leaf, 5) == r.retrieve(h, leaf, 5)    # skipped
    pop = r.retrieve([], leaf, 5)                                                   # fallback
    assert r.retrieve(["no-such-item"], leaf, 5) == pop
    counts = [s for _, s in pop]
    assert counts == sorted(counts, reverse=True) and counts[0] > 0
    everything = r.retrieve([], leaf, 10_000)          # k larger than the cluster: no padding
    assert sorted(i for i, _ in everything) == sorted(members[leaf])
    assert r.retrieve(h, leaf, 0) == []
    assert r.retrieve(h, "9.9.9", 5) == [] and not r.has_cluster("9.9.9")
    whole = r.retrieve(h, None, 7)                     # None: the whole catalogue
    assert len(whole) == 7 and not set(i for i, _ in whole) & set(h)
    seen_ok = r.retrieve(sorted(members[leaf]), leaf, 3, exclude_seen=False)
    assert len(seen_ok) == 3
    with pytest.raises(SerendipError, match="cluster_ids"):
        r.retrieve_batch([h, h], [leaf], 3)
    with pytest.raises(SerendipError, match="k"):
        r.retrieve(h, leaf, -1)


def test_saved_artifacts_round_trip(trained):
    result, ic, _, out = trained
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "index.parquet", "model.safetensors", "retriever.pt"]
    loaded = Retriever.load(out)
    assert loaded.model_version == result.retriever.model_version != "unversioned"
    h = ic.column("item_id").to_pylist()[:6]
    cid = ic.column("c2")[0].as_py()
    assert loaded.retrieve(h, cid, 10) == result.retriever.retrieve(h, cid, 10)
    # the TorchScript export computes the same logits as the eager model
    scripted = torch.jit.load(str(out / "retriever.pt"))
    seq = torch.tensor([[loaded.pos[i] + 1 for i in h]])
    lengths = torch.tensor([len(h)])
    with torch.inference_mode():
        np.testing.assert_allclose(scripted(seq, lengths).numpy(),
                                   loaded.model(seq, lengths).numpy(), rtol=1e-5, atol=1e-5)


def test_bad_input(synth_dir):
    _, _, ic = truth_tables(synth_dir)
    inter = pq.read_table(synth_dir / "interactions.parquet")
    with pytest.raises(ConfigError, match="heads"):
        train_retriever(inter, ic, RetrieverConfig(dim=30, heads=4))
    with pytest.raises(ConfigError, match="eval_level"):
        train_retriever(inter, ic, RetrieverConfig(eval_level=5))
    with pytest.raises(SerendipError, match="interactions"):
        train_retriever(inter.slice(0, 0), ic, RetrieverConfig())
    with pytest.raises(SerendipError, match="train-retriever"):
        Retriever.load(synth_dir)


def test_cli_train_retriever(synth_dir, tmp_path):
    from serendip.cli import main
    from serendip.data.io import write_table

    wd = tmp_path / "wd"
    wd.mkdir()
    for name in ("items", "interactions"):
        (wd / f"{name}.parquet").write_bytes((synth_dir / f"{name}.parquet").read_bytes())
    _, _, ic = truth_tables(synth_dir)
    write_table(wd, "item_clusters", ic)
    rc = main(["train-retriever", "--workdir", str(wd), "--no-register",
               "--set", "epochs=2", "--quiet", "--set", "torchscript=false"])
    assert rc == 0
    r = Retriever.load(wd / "retriever")
    assert r.has_cluster(ic.column("c3")[0].as_py())
    assert main(["train-retriever", "--workdir", str(wd), "--no-register",
                 "--set", "nope=1"]) == 2


def test_register_gate_and_load_from_registry(trained, tmp_path):
    pytest.importorskip("mlflow")
    from serendip.platform import registry
    from serendip.platform.retriever_registry import (
        GATE_METRIC,
        RETRIEVER,
        load_retriever,
        register_retriever,
    )

    result, ic, _, out = trained
    m = result.metrics
    v1 = register_retriever(out, m, tmp_path)
    first = registry.promote(RETRIEVER, v1, metric=GATE_METRIC, workdir=tmp_path)
    assert first.promoted and registry.alias_version(RETRIEVER, "champion") == v1
    # a challenger measured worse on the gate (the popularity baseline's own figures) is refused
    worse = dict(m, **{"ndcg@10": m["popularity_ndcg@10"], "hit@10": m["popularity_hit@10"]})
    v2 = register_retriever(out, worse, tmp_path)
    second = registry.promote(RETRIEVER, v2, metric=GATE_METRIC, workdir=tmp_path)
    assert not second.promoted and registry.alias_version(RETRIEVER, "champion") == v1
    assert registry.alias_version(RETRIEVER, "challenger") == v2
    champion = load_retriever(workdir=tmp_path)                  # models:/...@champion
    h = ic.column("item_id").to_pylist()[:5]
    cid = ic.column("c3")[0].as_py()
    assert champion.retrieve(h, cid, 5) == result.retriever.retrieve(h, cid, 5)
    with pytest.raises(SerendipError, match="no version with alias @nope"):
        load_retriever(f"models:/{RETRIEVER}@nope", workdir=tmp_path)
