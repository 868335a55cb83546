"""The server blames the client only for the client's mistakes (issue 12 cases 14, 15): a
feature row naming a cluster the served retriever does not know falls back (next cluster, then
the MLLM) and is logged; nothing known is a server fault (5xx); catalogue data the server sends
to its own models is fitted to their limits. Same models and code path as the servers."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from serving_fixtures import cluster_members, scored_items, unscored_items

from serendip.errors import SerendipError
from serendip.serving.cluster_choice import ClusterCache, ClusterChoice
from serendip.serving.contracts import MAX_FRAMES, MAX_TEXT_BYTES
from serendip.serving.errors import ServerFault, UnknownCluster, remote_error
from serendip.serving.handlers import RetrieverHandler
from serendip.serving.infer_requests import (
    first_row_choice,
    first_row_items,
    fit_frames,
    fit_text,
    mllm_request,
    retriever_request,
)
from serendip.serving.recommend import RecommendFlow


def _flow(served_wd, mllm_handler, retriever_handler, lookup, calls=None, catalog=None):
    from serendip.platform.serving.lookup import ItemCatalog

    calls = calls if calls is not None else {}

    async def predict(info):
        calls["mllm"] = calls.get("mllm", 0) + 1
        res = mllm_handler.infer([mllm_request(info)])[0]
        if isinstance(res, SerendipError):
            raise res
        return first_row_choice(res)

    async def retrieve(history, cluster_id, k):
        calls.setdefault("retrieve", []).append(cluster_id)
        res = retriever_handler.infer([retriever_request(history, cluster_id, k)])[0]
        if isinstance(res, SerendipError):
            raise res
        return first_row_items(res)

    return RecommendFlow(lookup, catalog or ItemCatalog(served_wd), predict, retrieve,
                         ClusterCache(ttl_s=60))


def _leaf(served_wd) -> tuple[str, str]:
    import pyarrow.parquet as pq

    cl = pq.read_table(served_wd / "clusters.parquet").to_pylist()
    c = next(r for r in cl if r["level"] == 3)
    return c["cluster_id"], c["description"]


def test_unknown_feast_cluster_falls_back_to_the_next_cluster(served_wd, mllm_handler,
                                                              retriever_handler, caplog):
    """Case 14: the row's first cluster is unknown to the retriever (tree rebuilt, retriever
    not re-exported): the next valid cluster answers, the inconsistency is logged."""
    item = scored_items(served_wd)[0]
    good, desc = _leaf(served_wd)
    calls: dict = {}
    row = ClusterChoice("9.9.9", "gone", "feast", (("8.8.8", "gone too"), ("7" * 300, ""),
                                                    (good, desc)))
    flow = _flow(served_wd, mllm_handler, retriever_handler, lambda i: row if i == item else None, calls)
    with caplog.at_level(logging.WARNING, logger="serendip.serving"):
        rec = asyncio.run(flow.recommend(item, [], 5))
    assert (rec.cluster_id, rec.description, rec.source) == (good, desc, "feast")
    ser = [i for i, s in zip(rec.item_ids, rec.item_sources) if s == "serendipitous"]
    assert ser and set(ser) <= cluster_members(served_wd)[good]
    # and one unrestricted call (None, concurrent) for the blended slate's exploitation items
    assert [c for c in calls["retrieve"] if c is not None] == ["9.9.9", "8.8.8", good]
    assert calls["retrieve"].count(None) == 1 and "mllm" not in calls  # the 300 B id

    # (longer than any id the server takes) is skipped without a call
    assert "'9.9.9'" in caplog.text and "unknown to the served retriever" in caplog.text
    again = asyncio.run(flow.recommend(item, [], 5))       # the working cluster is cached
    assert (again.cluster_id, again.source) == (good, "cache")


def test_no_known_feast_cluster_asks_the_mllm(served_wd, mllm_handler, retriever_handler):
    item = scored_items(served_wd)[1]
    calls: dict = {}
    row = ClusterChoice("9.9.9", "gone", "feast", (("8.8.8", "gone too"),))
    flow = _flow(served_wd, mllm_handler, retriever_handler, lambda i: row, calls)
    rec = asyncio.run(flow.recommend(item, [], 5))
    assert rec.source == "mllm" and calls["mllm"] == 1
    assert retriever_handler.retriever.has_cluster(rec.cluster_id)
    ser = [i for i, s in zip(rec.item_ids, rec.item_sources) if s == "serendipitous"]
    assert ser and set(ser) <= cluster_members(served_wd)[rec.cluster_id]


def test_nothing_known_is_a_server_fault_not_a_client_error(served_wd, mllm_handler, retriever_handler):
    """If neither the row nor the MLLM gives a cluster the retriever knows: a 5xx."""
    item = scored_items(served_wd)[2]

    class Amnesic:                     # a retriever exported from another tree
        retriever = type("R", (), {"has_cluster": staticmethod(lambda c: False)})()
        infer = RetrieverHandler.infer
        _decode = RetrieverHandler._decode
        spec = RetrieverHandler.spec

    flow = _flow(served_wd, mllm_handler, Amnesic(), lambda i: ClusterChoice("9.9.9", "", "feast"))
    with pytest.raises(ServerFault, match="no cluster of item") as e:
        asyncio.run(flow.recommend(item, [], 5))
    assert "9.9.9" in str(e.value)
    # the same kind over the wire: Triton's INVALID_ARG message becomes UnknownCluster
    msg = str(UnknownCluster("unknown cluster '9.9.9'", field="CLUSTER_ID", fix="x"))
    assert isinstance(remote_error("retriever", msg), UnknownCluster)
    assert not isinstance(remote_error("retriever", "K: is 0"), UnknownCluster)


def test_transformer_answers_a_server_fault_as_500(served_wd, mllm_handler, retriever_handler):
    """The KServe transformer maps ServerFault to InferenceError (HTTP 500), not InvalidInput."""
    from kserve.errors import InferenceError, InvalidInput
    from kserve.protocol.infer_type import InferInput, InferRequest

    from serendip.platform.serving.kserve_server import RecommendTransformer
    from serendip.platform.serving.lookup import ItemCatalog

    async def predict(info):
        return ClusterChoice("7.7.7", "", "mllm")

    async def retrieve(history, cluster_id, k):
        raise UnknownCluster(f"unknown cluster {cluster_id!r}", field="CLUSTER_ID")

    item = scored_items(served_wd)[0]
    model = RecommendTransformer(lambda i: ClusterChoice("9.9.9", "", "feast") if i == item
                                 else None, ItemCatalog(served_wd), predict, retrieve)
    i = InferInput("ITEM_ID", [1, 1], "BYTES")
    i.set_data_from_numpy(np.array([[item.encode()]], dtype=np.object_), binary_data=False)
    with pytest.raises(InferenceError) as e:
        asyncio.run(model.predict(InferRequest(model_name="recommend", infer_inputs=[i])))
    assert not isinstance(e.value, InvalidInput) and "no cluster of item" in str(e.value)
    i.set_data_from_numpy(np.array([[b"no-such-item"]], dtype=np.object_), binary_data=False)
    with pytest.raises(InvalidInput, match="ITEM_ID"):           # the client's own mistake
        asyncio.run(model.predict(InferRequest(model_name="recommend", infer_inputs=[i])))


def test_catalogue_data_is_fitted_to_the_servers_own_limits(served_wd, mllm_handler, retriever_handler):
    """Case 15: an unscored catalogue item with a 6,399-byte title (and 40 frames) is served
    though the client sent only its id; the same title from a client is still a 400."""
    from serendip.platform.serving.lookup import ItemCatalog

    item = unscored_items(served_wd)[0]
    catalog = ItemCatalog(served_wd)
    info = catalog(item)
    long_title = "é" * 3199 + "x"                       # 6,399 bytes of UTF-8
    assert len(long_title.encode()) == 6399 > MAX_TEXT_BYTES
    frames = list(info["frames"] or [])
    big = dict(info, title=long_title, context_description="d" * 5000,
               frames=(frames * 40)[:40] if frames else None)
    flow = _flow(served_wd, mllm_handler, retriever_handler, lambda i: None,
                 catalog=lambda i: big if i == item else catalog(i))
    rec = asyncio.run(flow.recommend(item, [], 5))
    assert rec.source == "mllm" and retriever_handler.retriever.has_cluster(rec.cluster_id)
    arrays = mllm_request(big)
    title = arrays["TITLE"][0, 0]
    assert len(title) <= MAX_TEXT_BYTES and title.decode().startswith("é" * 100)
    if frames:
        assert arrays["FRAMES"].shape[1] == MAX_FRAMES
    # a client sending the same title to `mllm` made the mistake: named, refused
    res = mllm_handler.infer([dict(arrays, TITLE=np.array([[long_title.encode()]], np.object_))])[0]
    assert isinstance(res, SerendipError) and res.field == "TITLE"


def test_server_side_mllm_refusal_is_a_server_fault(served_wd, mllm_handler, retriever_handler):
    """A catalogue item the served MLLM cannot take (here: its frames are unreadable) is the
    server's fault: 5xx, not a 400 naming an input the client never sent."""
    from serendip.platform.serving.lookup import ItemCatalog

    item = unscored_items(served_wd)[1]
    catalog = ItemCatalog(served_wd)
    broken = dict(catalog(item), thumbnail=b"not an image", frames=[b"not an image"])
    flow = _flow(served_wd, mllm_handler, retriever_handler, lambda i: None, catalog=lambda i: broken)
    with pytest.raises(ServerFault, match=item):
        asyncio.run(flow.recommend(item, [], 5))


def test_fit_text_and_frames():
    assert fit_text("abc", 2) == "ab" and fit_text("éé", 3) == "é" and fit_text("ok") == "ok"
    assert fit_frames(list(range(100)), 5) == [0, 25, 50, 74, 99]
    assert fit_frames([1, 2], 5) == [1, 2]


def test_recommend_cli_tells_a_server_fault_from_a_bad_input(capsys):
    """`serendip recommend` against a server answering 500: exit 1 and one line saying the
    server failed (not exit 2 "refused", which means the user's input was wrong)."""
    import http.server
    import json
    import threading

    from serendip.cli import main

    class V2(http.server.BaseHTTPRequestHandler):
        status = 500

        def do_GET(self):  # noqa: N802 — health
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):  # noqa: N802 — infer
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps({"error": "no cluster of item 'v1' is known"}).encode()
            self.send_response(V2.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), V2)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"127.0.0.1:{srv.server_address[1]}"
    try:
        assert main(["recommend", "--item", "v1", "--url", url]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "server failed (500)" in err[0] and "no cluster" in err[0]
        V2.status = 400
        assert main(["recommend", "--item", "v1", "--url", url]) == 2
        assert "refused the request (400)" in capsys.readouterr().err
    finally:
        srv.shutdown()
        srv.server_close()


def test_online_store_outage_is_answered_by_the_mllm_and_counted(served_wd, mllm_handler, retriever_handler):
    """Redis gone mid-run: the lookup fails fast (ServerFault); recommend answers from the MLLM
    (not cached, so the store is used again once back), counts the error; an item the
    catalogue does not know is then a 5xx, not the client's 400."""
    from serendip.platform.serving.metrics import STORE_ERRORS

    state = {"down": True}
    item = scored_items(served_wd)[3]

    def lookup(i):
        if state["down"]:
            raise ServerFault("online store read failed (ConnectionError: refused)")
        return ClusterChoice(*_leaf(served_wd), "feast")

    errors = []
    flow = _flow(served_wd, mllm_handler, retriever_handler, lookup)
    flow.on_store_error = lambda: errors.append(1)
    before = STORE_ERRORS.labels("recommend")._value.get()
    rec = asyncio.run(flow.recommend(item, [], 5))
    assert rec.source == "mllm" and rec.item_ids and len(errors) == 1
    with pytest.raises(ServerFault, match="feature store is unavailable"):
        asyncio.run(flow.recommend("no-such-item", [], 5))
    state["down"] = False                                   # the store is back
    assert asyncio.run(flow.recommend(item, [], 5)).source == "feast"
    # the transformer wires the hook to its Prometheus counter
    from serendip.platform.serving.kserve_server import RecommendTransformer
    from serendip.platform.serving.lookup import ItemCatalog

    async def predict(info):
        return first_row_choice(mllm_handler.infer([mllm_request(info)])[0])

    async def retrieve(history, cluster_id, k):
        return first_row_items(retriever_handler.infer([retriever_request(history, cluster_id, k)])[0])

    state["down"] = True
    model = RecommendTransformer(lookup, ItemCatalog(served_wd), predict, retrieve)
    asyncio.run(model.flow.recommend(item, [], 5))
    assert STORE_ERRORS.labels("recommend")._value.get() == before + 1
