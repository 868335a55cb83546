"""Serving logic without servers: tensor contracts (and the committed config.pbtxt files agree
with them), the handlers on real saved models, the recommend flow and its cache, the micro-
batcher, and the exported repository layout."""

from __future__ import annotations

import asyncio
import io
import json
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from serving_fixtures import cluster_members, scored_items, unscored_items

from serendip.errors import SerendipError
from serendip.serving.batching import MicroBatcher
from serendip.serving.cluster_choice import ClusterCache, ClusterChoice
from serendip.serving.codec import pad_rows
from serendip.serving.contracts import MLLM, RECOMMEND, RETRIEVER, check_tensors
from serendip.serving.infer_requests import (
    first_row_choice,
    first_row_items,
    mllm_request,
    retriever_request,
)
from serendip.serving.recommend import RecommendFlow
from serendip.serving.repository import (
    ExportSource,
    export_repository,
    latest_mllm_dir,
    template_dir,
)
from serendip.serving.triton_backend import config_pbtxt_io


def _b(rows):
    return np.array([[x.encode() if isinstance(x, str) else x for x in r] for r in rows],
                    dtype=np.object_)


@pytest.mark.parametrize("spec", [MLLM, RETRIEVER, RECOMMEND])
def test_committed_config_pbtxt_matches_the_contract(spec):
    text = (template_dir() / spec.name / "config.pbtxt").read_text()
    assert config_pbtxt_io(spec) in text
    assert f'name: "{spec.name}"' in text and 'backend: "python"' in text
    assert f"max_batch_size: {spec.max_batch_size}" in text
    assert "dynamic_batching" in text
    assert (template_dir() / spec.name / "1" / "model.py").is_file()


def test_check_tensors_names_the_input():
    ok = {"ITEM_ID": ("BYTES", [2, 1]), "K": ("INT32", [2, 1]), "HISTORY": ("BYTES", [2, 0])}
    assert check_tensors(RECOMMEND, ok) == 2
    bad = [({"ITEM_ID": ("INT32", [1, 1])}, "ITEM_ID", "data-type"),
           ({"ITEM_ID": ("BYTES", [1, 2])}, "ITEM_ID", "shape"),
           ({"ITEM_ID": ("BYTES", [1])}, "ITEM_ID", "shape"),
           ({"ITEM_ID": ("BYTES", [65, 1])}, "ITEM_ID", "batch size"),
           ({"ITEM_ID": ("BYTES", [1, 1]), "K": ("INT32", [2, 1])}, "K", "batch size"),
           ({"K": ("INT32", [1, 1])}, "ITEM_ID", "missing"),
           ({"ITEM_ID": ("BYTES", [1, 1]), "USER": ("BYTES", [1, 1])}, "USER", "unexpected")]
    for tensors, field, words in bad:
        with pytest.raises(SerendipError) as e:
            check_tensors(RECOMMEND, tensors)
        assert e.value.field == field and words in str(e.value)


def test_pad_rows_states_short_lists():
    a = pad_rows([[1.0, 2.0], [3.0]], np.nan, np.float32)
    assert a.shape == (2, 2) and np.isnan(a[1, 1])


def test_mllm_handler_valid_clusters_batched_and_per_request_errors(served_wd, mllm_handler):
    members = cluster_members(served_wd)
    frames = [f"synth:2.120.1.0.1.{i}#f{i}" for i in range(4)]
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 200, 10)).save(buf, "PNG")
    good = {"TITLE": _b([["clip one"], ["clip two"]]), "FRAMES": _b([frames[:2], frames[2:]])}
    png = {"TITLE": _b([["png"]]), "FRAMES": _b([[buf.getvalue(), b""]])}  # "" is padding
    corrupt = {"TITLE": _b([["x"]]), "FRAMES": _b([[b"not an image"]])}
    no_frames = {"TITLE": _b([["x"]])}
    res = mllm_handler.infer([good, corrupt, png, no_frames])
    assert isinstance(res[1], SerendipError) and res[1].field == "FRAMES[0]"
    assert isinstance(res[3], SerendipError) and res[3].field == "FRAMES"
    for out, rows in ((res[0], 2), (res[2], 1)):
        assert out["CLUSTER_IDS"].shape == (rows, 1)
        for cid, desc in zip(out["CLUSTER_IDS"][:, 0], out["DESCRIPTIONS"][:, 0]):
            assert cid.decode() in members and cid.decode().count(".") == 2
            assert desc.decode() == dict(zip(mllm_handler.predictor.cluster_ids,
                                             mllm_handler.predictor.descriptions))[cid.decode()]
        assert out["MODEL_VERSION"][0, 0].decode() == mllm_handler.model_version
    # the same input alone gives the same answer as inside a batch (deterministic decoding)
    alone = mllm_handler.infer([{"TITLE": _b([["clip two"]]), "FRAMES": _b([frames[2:]])}])[0]
    assert alone["CLUSTER_IDS"][0, 0] == res[0]["CLUSTER_IDS"][1, 0]


def test_retriever_handler_stays_inside_the_cluster(served_wd, retriever_handler):
    members = cluster_members(served_wd)
    seen = scored_items(served_wd)[:5]
    for cluster in sorted(c for c in members if c.count(".") == 2)[:4]:
        out = retriever_handler.infer([retriever_request(seen, cluster, 8)])[0]
        items = [i for i, _ in first_row_items(out)]
        assert items and set(items) <= members[cluster] and not set(items) & set(seen)
    bad = retriever_handler.infer([retriever_request(seen, "7.7.7", 3),
                      {"CLUSTER_ID": _b([["0"]]), "K": np.array([[0]], np.int32)}])
    assert [e.field for e in bad] == ["CLUSTER_ID", "K"]


def test_recommend_flow_lookup_cache_and_mllm_fallback(served_wd, mllm_handler, retriever_handler):
    from serendip.platform.serving.lookup import ClusterLookup, ItemCatalog

    calls = {"mllm": 0}

    async def predict(info):
        calls["mllm"] += 1
        return first_row_choice(mllm_handler.infer([mllm_request(info)])[0])

    async def retrieve(history, cluster_id, k):
        return first_row_items(retriever_handler.infer([retriever_request(history, cluster_id, k)])[0])

    lookup = ClusterLookup(served_wd, "table")
    assert lookup.kind == "table"
    flow = RecommendFlow(lookup, ItemCatalog(served_wd), predict, retrieve, ClusterCache(ttl_s=60))
    members = cluster_members(served_wd)
    hit, miss = scored_items(served_wd)[0], unscored_items(served_wd)[0]

    async def go():
        r1 = await flow.recommend(hit, [], 5)
        r2 = await flow.recommend(hit, [], 5)
        # many concurrent requests for one unscored item: one MLLM call
        r3 = await asyncio.gather(*(flow.recommend(miss, [], 5) for _ in range(5)))
        return r1, r2, r3

    r1, r2, r3 = asyncio.run(go())
    assert (r1.source, r2.source) == ("table", "cache")
    ser = [i for i, s in zip(r1.item_ids, r1.item_sources) if s == "serendipitous"]
    assert r1.cluster_id == lookup(hit).cluster_id and ser and set(ser) <= members[r1.cluster_id]
    assert calls["mllm"] == 1 and r3[0].source == "mllm"
    assert all(r.cluster_id == r3[0].cluster_id for r in r3)
    with pytest.raises(SerendipError) as e:
        asyncio.run(flow.recommend("nope", [], 5))
    assert e.value.field == "ITEM_ID"
    out = asyncio.run(flow.infer({"ITEM_ID": _b([[hit], [miss]]),
                                  "K": np.array([[2], [3]], np.int32)}))
    assert out["ITEM_IDS"].shape[0] == 2 and out["SOURCE"][1, 0] == b"cache"


def test_recommend_is_the_blended_slate_share_kept_and_sources_labelled(
        served_wd, mllm_handler, retriever_handler, monkeypatch):
    """Issue 15 item 5: ceil(SHARE · K) items from the serendipitous cluster (labelled
    ``serendipitous``), the rest from the unrestricted retriever (``exploit``, an empty
    CLUSTER_ID); SHARE per request, else the server default; a bad SHARE names the field."""
    import math

    from serendip.errors import ConfigError
    from serendip.platform.serving.lookup import ClusterLookup, ItemCatalog

    asked: list = []

    async def predict(info):
        return first_row_choice(mllm_handler.infer([mllm_request(info)])[0])

    async def retrieve(history, cluster_id, k):
        asked.append(cluster_id)
        res = retriever_handler.infer([retriever_request(history, cluster_id, k)])[0]
        assert not isinstance(res, SerendipError), res
        return first_row_items(res)

    flow = RecommendFlow(ClusterLookup(served_wd, "table"), ItemCatalog(served_wd), predict, retrieve,
                         ClusterCache(ttl_s=60))
    assert flow.serendipitous_share == 0.2
    members = cluster_members(served_wd)
    hit = scored_items(served_wd)[0]
    unrestricted = [i for i, _ in retriever_handler.retriever.retrieve([], None, 30) if i != hit]
    for share, k in ((None, 10), (0.4, 10), (0.5, 5), (1.0, 6), (0.0, 7)):
        rec = asyncio.run(flow.recommend(hit, [], k, share))
        n_s = math.ceil((0.2 if share is None else share) * k - 1e-9)
        ser = [i for i, s in zip(rec.item_ids, rec.item_sources) if s == "serendipitous"]
        exp = [i for i, s in zip(rec.item_ids, rec.item_sources) if s == "exploit"]
        assert len(rec.item_ids) == len(set(rec.item_ids)) == k
        assert len(ser) == n_s and len(exp) == k - n_s, (share, rec.item_sources)
        assert set(ser) <= members[rec.cluster_id] and hit not in rec.item_ids
        assert exp == [i for i in unrestricted if i not in ser][: len(exp)]
    assert None in asked                                   # the unrestricted retriever
    out = asyncio.run(flow.infer({"ITEM_ID": _b([[hit], [hit]]),
                                  "K": np.array([[10], [4]], np.int32),
                                  "SHARE": np.array([[0.3], [0.5]], np.float32)}))
    srcs = [[x.decode() for x in row if x] for row in out["ITEM_SOURCES"]]
    assert [r.count("serendipitous") for r in srcs] == [3, 2]
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(SerendipError) as e:
            asyncio.run(flow.infer({"ITEM_ID": _b([[hit]]),
                                    "SHARE": np.array([[bad]], np.float32)}))
        assert e.value.field == "SHARE"
    monkeypatch.setenv("SERENDIP_SERENDIPITOUS_SHARE", "0.5")
    assert RecommendFlow(flow.lookup, flow.item_info, predict, retrieve).serendipitous_share \
        == 0.5
    monkeypatch.setenv("SERENDIP_SERENDIPITOUS_SHARE", "lots")
    with pytest.raises(ConfigError, match="SERENDIP_SERENDIPITOUS_SHARE"):
        RecommendFlow(flow.lookup, flow.item_info, predict, retrieve)


def test_mllm_fallback_answers_only_the_contexts_candidates(served_wd, mllm_handler, retriever_handler):
    """Issue 15 item 1 in serving: the recommend flow's MLLM fallback sends the context's
    serendipitous candidates (CANDIDATES) and the answer is one of them — never the item's own
    cluster; the unrestricted model does name non-candidates for these items."""
    from serendip.candidates import sibling_map
    from serendip.platform.serving.lookup import ItemCatalog

    catalog = ItemCatalog(served_wd)
    cl, ic = pq.read_table(served_wd / "clusters.parquet"), pq.read_table(served_wd / "item_clusters.parquet")
    sibs = sibling_map(cl, catalog.level, catalog.delta)
    own = dict(zip(ic.column("item_id").to_pylist(),
                   ic.column(f"c{catalog.level}").to_pylist()))
    items = unscored_items(served_wd)[:6]
    free = []
    for item in items:
        req = mllm_request({k: v for k, v in catalog(item).items() if k != "candidates"})
        req["K"] = np.array([[mllm_handler.max_k]], np.int32)
        out = mllm_handler.infer([req])[0]
        free += [(item, c.decode()) for c in out["CLUSTER_IDS"][0] if c]
    assert any(c not in sibs[own[i]] for i, c in free)       # the restriction matters

    async def predict(info):
        req = mllm_request(info)
        assert "CANDIDATES" in req
        return first_row_choice(mllm_handler.infer([req])[0])

    async def retrieve(history, cluster_id, k):
        return first_row_items(retriever_handler.infer([retriever_request(history, cluster_id, k)])[0])

    flow = RecommendFlow(lambda i: None, catalog, predict, retrieve, ClusterCache(ttl_s=60))
    for item in items:
        choice = asyncio.run(flow.cluster_of(item))
        assert choice.source == "mllm" and choice.cluster_id != own[item]
        assert {c for c, _ in choice.candidates()} <= set(sibs[own[item]])
    bad = mllm_handler.infer([{**mllm_request(catalog(items[0])),
                       "CANDIDATES": _b([["no-such-cluster"]])}])[0]
    assert isinstance(bad, SerendipError) and bad.field == "CANDIDATES"


def test_cluster_catalog_gets_candidates_from_feast_and_the_clusters_table(served_wd):
    """In a cluster (no work directory: items and clusters by path, each item's own cluster
    from Feast's item_clusters view) the MLLM fallback gets the same candidates as from the
    work directory's tree."""
    from serendip.data.io import find_table
    from serendip.platform.serving.lookup import ClusterLookup, ItemCatalog

    ref = ItemCatalog(served_wd)
    lookup = ClusterLookup(served_wd, "auto")
    assert lookup.kind == "feast"
    cat = ItemCatalog(None, items=str(find_table(served_wd, "items")),
                      describe=lookup.own_description, clusters=str(find_table(served_wd, "clusters")),
                      own_cluster=lookup.own_cluster, level=ref.level, delta=ref.delta)
    for item in unscored_items(served_wd)[:4] + scored_items(served_wd)[:2]:
        assert cat(item)["candidates"] and cat(item)["candidates"] == ref(item)["candidates"]
        assert "CANDIDATES" in mllm_request(cat(item))
    plain = ItemCatalog(None, items=str(find_table(served_wd, "items")))
    assert plain(unscored_items(served_wd)[0])["candidates"] is None        # no tree: unknown


def test_feast_lookup_matches_the_scored_table(served_wd):
    from serendip.platform.serving.lookup import ClusterLookup

    feast, table = ClusterLookup(served_wd, "auto"), ClusterLookup(served_wd, "table")
    assert feast.kind == "feast"
    for item in scored_items(served_wd)[:10]:
        a, b = feast(item), table(item)
        assert (a.cluster_id, a.description, a.source) == (b.cluster_id, b.description, "feast")
    assert feast(unscored_items(served_wd)[0]) is None and feast("nope") is None


def test_cluster_cache_ttl_and_lru():
    c = ClusterCache(size=2, ttl_s=0.05)
    x = ClusterChoice("1.0", "d", "feast")
    c.put("a", x)
    c.put("b", x)
    c.put("c", x)
    assert c.get("a") is None and c.get("c") == x
    time.sleep(0.06)
    assert c.get("c") is None


def test_micro_batcher_groups_concurrent_requests(retriever_handler):
    sizes = []

    class Spy:
        spec = retriever_handler.spec

        def infer(self, reqs):
            sizes.append(len(reqs))
            return retriever_handler.infer(reqs)

    async def go():
        b = MicroBatcher(Spy(), max_batch=8, max_delay_s=0.05)
        reqs = [retriever_request([], "0", 3) for _ in range(8)]
        outs = await asyncio.gather(*(b.submit(r) for r in reqs))
        b.close()
        return outs

    outs = asyncio.run(go())
    assert len(outs) == 8 and all("ITEM_IDS" in o for o in outs)
    assert max(sizes) > 1, sizes


def test_export_writes_triton_layout_atomically(served_wd, tmp_path):
    repo = tmp_path / "model_repository"
    export_repository([ExportSource("mllm", latest_mllm_dir(served_wd), 3, "test"),
                       ExportSource("retriever", served_wd / "retriever", 2, "test")], repo)
    assert (repo / "mllm" / "3" / "weights" / "serendip.json").exists()
    assert (repo / "mllm" / "3" / "model.py").exists()
    assert (repo / "retriever" / "2" / "weights" / "model.safetensors").exists()
    assert json.loads((repo / "mllm" / "export.json").read_text())["version"] == 3
    # a re-export replaces the model whole (Triton serves the latest version folder)
    export_repository([ExportSource("mllm", latest_mllm_dir(served_wd), 4, "test")], repo,
                      instances=2)
    assert sorted(p.name for p in (repo / "mllm").iterdir() if p.is_dir()) == ["4"]
    assert "count: 2 kind: KIND_CPU" in (repo / "mllm" / "config.pbtxt").read_text()
    assert not list(tmp_path.glob(".*tmp"))
    # the BLS recommend gets a snapshot of the scores (Feast cannot run in Triton's venv)
    export_repository([], repo, snapshot_from=served_wd)
    snap = repo / "recommend" / "1" / "weights"
    assert (snap / "item_serendipity.parquet").exists() and (snap / "items.parquet").exists()
    assert json.loads((snap / "snapshot.json").read_text())["scored_items"] == \
        len(scored_items(served_wd))
    with pytest.raises(SerendipError) as e:
        export_repository([ExportSource("retriever", tmp_path, 1)], repo)
    assert e.value.field == "retriever"
