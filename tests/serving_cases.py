"""End-to-end request cases shared by the Triton and KServe-fallback serving tests: good
requests with checks on the answers, and bad inputs that must come back as 400 /
INVALID_ARGUMENT naming the input — after which the server must still answer."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image
from serving_fixtures import cluster_members, scored_items, unscored_items

from serendip.platform.serving.harness import ServeProcess, probe, tensor

BAD = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def _rec(item, history=None, k=5, **override):
    inputs = {"ITEM_ID": tensor([[item]], [1, 1])}
    if history is not None:
        inputs["HISTORY"] = tensor([history], [1, len(history)])
    if k is not None:
        inputs["K"] = tensor([[k]], [1, 1], "INT32")
    inputs.update(override)
    return {"model": "recommend", "inputs": inputs}


def _mllm(frames, title="a video", k=None, binary=False, **override):
    inputs = {"TITLE": tensor([[title]], [1, 1])}
    if frames is not None:
        inputs["FRAMES"] = tensor(frames, [1, len(frames)], binary=binary)
    if k is not None:
        inputs["K"] = tensor([[k]], [1, 1], "INT32")
    inputs.update(override)
    return {"model": "mllm", "inputs": inputs}


def _retr(cluster, history=(), k=5):
    inputs = {"CLUSTER_ID": tensor([[cluster]], [1, 1]), "K": tensor([[k]], [1, 1], "INT32")}
    if history:
        inputs["HISTORY"] = tensor([list(history)], [1, len(history)])
    return {"model": "retriever", "inputs": inputs}


def recommend_cases(wd: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """(good cases, bad cases with the input name the error must mention)."""
    hit, miss = scored_items(wd)[0], unscored_items(wd)[0]
    hist = scored_items(wd)[1:4]
    good = [_rec(hit, hist, 5), _rec(miss, hist, 5), _rec(hit, None, 3),
            _rec(hit, [], 4), _rec(hit, ["not-an-item"] * 3 + hist, 200),
            _rec(hit, hist, 10, SHARE=tensor([[0.4]], [1, 1], "FP32")),     # 4 of 10
            _rec(hit, hist, 5, SHARE=tensor([[1.0]], [1, 1], "FP32")),      # cluster only
            _rec(miss, hist, 6, SHARE=tensor([[0.0]], [1, 1], "FP32"))]     # exploit only
    bad = [
        (_rec(hit, hist, None, ITEM_ID=tensor([[7]], [1, 1], "INT32")), "ITEM_ID"),
        (_rec(hit, hist, 5, ITEM_ID=tensor([[hit, hit]], [1, 2])), "ITEM_ID"),
        ({"model": "recommend", "inputs": {"HISTORY": tensor([hist], [1, 3])}}, "ITEM_ID"),
        (_rec("no-such-item", hist, 5), "ITEM_ID"),
        (_rec(hit, hist, 0), "K"),
        (_rec(hit, hist, -3), "K"),
        (_rec(hit, hist, 1_000_000_000), "K"),
        (_rec(hit, hist, None, K=tensor([[2.5]], [1, 1], "FP32")), "K"),
        (_rec(hit, None, 5, HISTORY=tensor([b"\xff\xfe"], [1, 1], binary=True)), "HISTORY"),
        (_rec(hit, hist, 5, SHARE=tensor([[1.5]], [1, 1], "FP32")), "SHARE"),
        (_rec(hit, hist, 5, SHARE=tensor([[-0.2]], [1, 1], "FP32")), "SHARE"),
        (_rec(hit, hist, 5, SHARE=tensor([["lots"]], [1, 1])), "SHARE"),
    ]
    return good, bad


def model_cases(wd: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    frames = [f"synth:1.90.2.1.0.{i}#f{i}" for i in range(3)]
    members = cluster_members(wd)
    cluster = sorted(c for c in members if c.count(".") == 2)[0]
    level3 = sorted(c for c in members if c.count(".") == 2)
    two = level3[-2:]                  # the only clusters the answer may name (CANDIDATES)
    good = [_mllm(frames), _mllm([_png(32, 32)] * 2, binary=True, k=1), _mllm(frames, k=3),
            _mllm(frames, k=2, CANDIDATES=tensor([two], [1, 2])),
            _retr(cluster, scored_items(wd)[:3], 5), _retr(cluster.split(".")[0], (), 7)]
    bad = [
        (_mllm([b"\x89PNG\r\n\x1a\n garbage"], binary=True), "FRAMES[0]"),
        (_mllm([b"\x00" * (9 * 1024 * 1024)], binary=True), "FRAMES[0]"),
        (_mllm([_png(5000, 5000)], binary=True), "FRAMES[0]"),
        (_mllm(["synth:not-a-uri"]), "FRAMES[0]"),
        (_mllm(None), "FRAMES"),
        (_mllm(frames, k=0), "K"),
        (_mllm(frames, k=50), "K"),
        (_mllm(frames, TITLE=tensor([[1.0]], [1, 1], "FP32")), "TITLE"),
        (_retr("9.9.9"), "CLUSTER_ID"),
        (_mllm(frames, CANDIDATES=tensor([["9.9.9"]], [1, 1])), "CANDIDATES"),
        (_retr(cluster, (), 0), "K"),
    ]
    return good, bad


def check_recommend_answer(wd: Path, case: dict, res: dict) -> None:
    """The blended slate (issue 15): ceil(share · k) items from the serendipitous cluster,
    labelled ``serendipitous``, the rest ``exploit`` (the unrestricted retriever), no
    duplicates, nothing already seen, each source's scores in descending order."""
    import math

    assert res["ok"], res
    out = res["outputs"]
    cluster = out["CLUSTER_ID"][0][0]
    items = [i for i in out["ITEM_IDS"][0] if i]
    sources = [s for s in out["ITEM_SOURCES"][0] if s][: len(items)]
    members = cluster_members(wd)
    assert cluster in members, cluster
    assert items, "no items recommended"
    assert len(sources) == len(items) and set(sources) <= {"exploit", "serendipitous"}
    assert len(set(items)) == len(items), "a duplicate on the slate"
    ser = [i for i, s in zip(items, sources) if s == "serendipitous"]
    assert set(ser) <= members[cluster], "a serendipitous item outside the cluster"
    history = set(case["inputs"].get("HISTORY", {}).get("data", [[]])[0])
    assert not set(items) & history, "an already-seen item was recommended"
    item = case["inputs"]["ITEM_ID"]["data"][0][0]
    assert item not in items, "the context item itself was recommended"
    k = case["inputs"].get("K", {}).get("data", [[10]])[0][0]
    share = case["inputs"].get("SHARE", {}).get("data", [[0.2]])[0][0]
    assert len(items) <= k
    n_s = math.ceil(share * k - 1e-9)
    if len(items) == k and len(members[cluster] - history) >= k:
        assert len(ser) == n_s, (share, k, sources)             # the share is kept
    else:
        assert len(ser) <= max(n_s, len(items) - sum(s == "exploit" for s in sources))
    if share == 0:
        assert not ser
    scores = [s for s in out["SCORES"][0][: len(items)]]
    for src in ("exploit", "serendipitous"):
        mine = [sc for sc, s in zip(scores, sources) if s == src]
        assert mine == sorted(mine, reverse=True), (src, mine)
    assert out["DESCRIPTION"][0][0]
    assert out["SOURCE"][0][0] in ("feast", "table", "cache", "mllm")


def run_backend_checks(server: ServeProcess, wd: Path, protocol: str) -> dict:
    """All cases against one running server over one protocol; returns a summary."""
    n = check_recommend(server.url(protocol), protocol, wd)
    n += check_models(server.url(protocol, "mllm"), protocol, wd)
    assert server.alive()
    return {"protocol": protocol, "cases": n}


def check_recommend(url: str, protocol: str, wd: Path, model: str = "recommend") -> int:
    """Good recommend requests (answers checked) and bad ones (4xx naming the input), then a
    good one again: the server kept serving."""
    good, bad = recommend_cases(wd)
    for c in good + [c for c, _ in bad]:
        c["model"] = model
    res = probe(url, protocol, good + [c for c, _ in bad] + good[:1])
    assert res["ready"]
    results = res["results"]
    for case, r in zip(good, results):
        check_recommend_answer(wd, case, r)
    sources = {r["outputs"]["SOURCE"][0][0] for r in results[: len(good)]}
    assert "mllm" in sources or "cache" in sources, sources     # the unscored item
    for (_case, name), r in zip(bad, results[len(good):]):
        assert not r["ok"], (name, r)
        assert r["status"] == BAD[protocol], (name, r)
        assert name in r["message"], (name, r["message"])
    check_recommend_answer(wd, good[0], results[-1])          # still serving
    return len(good) + len(bad)


def check_models(url: str, protocol: str, wd: Path) -> int:
    """mllm and retriever called directly: good answers, bad inputs refused by name."""
    members = cluster_members(wd)
    mgood, mbad = model_cases(wd)
    res = probe(url, protocol, mgood + [c for c, _ in mbad] + mgood[:1])
    results = res["results"]
    for case, r in zip(mgood, results):
        assert r["ok"], r
        if case["model"] == "mllm":
            cids = [c for c in r["outputs"]["CLUSTER_IDS"][0] if c]
            k = case["inputs"].get("K", {}).get("data", [[1]])[0][0]
            assert len(cids) == len(set(cids)) == k, cids          # top-k distinct clusters
            assert all(c in members and c.count(".") == 2 for c in cids)   # level 3
            allowed = case["inputs"].get("CANDIDATES", {}).get("data", [None])[0]
            assert allowed is None or set(cids) <= set(allowed), (cids, allowed)
            assert r["outputs"]["MODEL_VERSION"][0][0]
        else:
            cluster = case["inputs"]["CLUSTER_ID"]["data"][0][0]
            items = [i for i in r["outputs"]["ITEM_IDS"][0] if i]
            assert items and set(items) <= members[cluster]
    for (_case, name), r in zip(mbad, results[len(mgood):]):
        assert not r["ok"], (name, r)
        assert r["status"] == BAD[protocol], (name, r)
        assert name in r["message"], (name, r["message"])
    assert results[-1]["ok"]
    return len(mgood) + len(mbad)


def cli_recommend(server: ServeProcess, item: str, history: list[str], protocol: str) -> dict:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "serendip.cli", "recommend", "--item", item,
                        "--history", *history, "--k", "5", "--url", server.url(protocol),
                        "--protocol", protocol, "--json"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def check_plain_json(url: str, wd: Path, model: str = "recommend") -> None:
    """A curl-style JSON request gets a JSON answer; a bad one a 400 JSON error."""
    import urllib.error
    import urllib.request

    def post(body: dict):
        req = urllib.request.Request(f"http://{url}/v2/models/{model}/infer",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    item = scored_items(wd)[2]
    status, ans = post({"inputs": [
        {"name": "ITEM_ID", "shape": [1, 1], "datatype": "BYTES", "data": [item]},
        {"name": "K", "shape": [1, 1], "datatype": "INT32", "data": [3]}]})
    assert status == 200, ans
    out = {o["name"]: o["data"] for o in ans["outputs"]}
    assert out["CLUSTER_ID"][0] in cluster_members(wd)
    ser = [i for i, s in zip(out["ITEM_IDS"], out["ITEM_SOURCES"]) if s == "serendipitous"]
    assert len(out["ITEM_IDS"]) == 3 and len(ser) == 1          # ceil(0.2 · 3) of 3
    assert set(ser) <= cluster_members(wd)[out["CLUSTER_ID"][0]]
    status, ans = post({"inputs": [
        {"name": "ITEM_ID", "shape": [1, 1], "datatype": "BYTES", "data": ["no-such-item"]}]})
    assert status == 400 and "ITEM_ID" in ans["error"], ans
