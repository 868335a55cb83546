"""The Triton ``recommend`` model reads Feast's Redis rows without Feast (its numpy<2 venv
cannot hold it): the reader must give exactly Feast's answers, including misses and rows
removed by a re-score, so the transformer and Triton agree (issue 12 case 8, issue 17 item 1)."""

from __future__ import annotations

import pytest
from serving_redis import redis_env, redis_server, write_scores  # noqa: F401 — fixtures

pytest.importorskip("feast")
pytest.importorskip("redis")
pytest.importorskip("mmh3")


def test_direct_redis_reader_matches_feast(tmp_path, redis_env):  # noqa: F811
    from serendip.platform import features
    from serendip.platform.serving.feast_redis import decode_value
    from serendip.platform.serving.lookup import ClusterLookup, RedisOnline

    ids = ["v1", "v2", "é-3", "4 with spaces", "x" * 200]
    write_scores(tmp_path, ids, "m1", clusters=("3.1.0", "3.2.1", "0.0.0"))
    features.sync(tmp_path)
    asked = ids + ["nope"]
    want = features.OnlineFeatures(tmp_path).get(asked)
    got = RedisOnline(redis_env.connection_string).get(asked)
    assert got == want and [r["found"] for r in got] == [True] * 5 + [False]
    feast = ClusterLookup(tmp_path, "feast")
    direct = ClusterLookup(tmp_path, "table", redis_connection=redis_env.connection_string)
    assert direct.kind == "feast"
    for i in asked:
        assert direct(i) == feast(i)
    # a smaller re-score: both readers see the removal
    write_scores(tmp_path, ids[:2], "m2", clusters=("9.0.0",))
    features.sync(tmp_path)
    assert RedisOnline(redis_env.connection_string).get(asked) == \
        features.OnlineFeatures(tmp_path).get(asked)
    assert direct("v1").cluster_id == "9.0.0" and direct("é-3") is None
    with pytest.raises(ValueError, match="field 3"):
        decode_value(b"\x18\x05")                  # int32_val: not used by our views


def _json_recommend(http: str, item: str, k: int = 3) -> dict:
    import json
    import urllib.request

    body = json.dumps({"inputs": [
        {"name": "ITEM_ID", "shape": [1, 1], "datatype": "BYTES", "data": [item]},
        {"name": "K", "shape": [1, 1], "datatype": "INT32", "data": [k]}]}).encode()
    req = urllib.request.Request(f"http://{http}/v2/models/recommend/infer", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        out = json.loads(r.read())
    return {o["name"]: o["data"] for o in out["outputs"]}


@pytest.mark.slow
def test_transformer_and_triton_recommend_read_redis_and_agree(tmp_path_factory, request,
                                                               redis_env):  # noqa: F811,E501
    """`serve` with SERENDIP_FEAST_ONLINE_STORE=redis: the KServe transformer (through Feast)
    and Triton's BLS `recommend` (Redis read directly) answer from the same rows; after a
    smaller re-score both serve the removed item as a miss (the MLLM answers)."""
    import shutil

    from serving_fixtures import scored_items

    from serendip.platform import features
    from serendip.platform.serving.harness import ServeProcess
    from serendip.platform.serving.triton import triton_available

    if not triton_available():
        pytest.skip("Triton venv (.venv-triton) missing: run `make triton-venv`")
    base = request.getfixturevalue("served_wd")
    wd = tmp_path_factory.mktemp("redis-served") / "wd"
    shutil.copytree(base, wd, ignore=shutil.ignore_patterns("feature_repo", "model_repository",
                                                            "*.log", ".serve"))
    features.sync(wd)
    kept, removed = scored_items(wd)[:2], scored_items(wd)[2]
    with ServeProcess(wd, "triton") as server:
        assert "features from feast" in server.log_text()
        for item in kept:
            a = _json_recommend(server.http, item)
            b = _json_recommend(server.triton_http, item)
            assert a["SOURCE"] == b["SOURCE"] == ["feast"], (a, b)
            assert a["CLUSTER_ID"] == b["CLUSTER_ID"] and a["ITEM_IDS"] == b["ITEM_IDS"]
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from serendip.data.io import atomic_write_parquet

        t = pq.read_table(wd / "item_serendipity.parquet")
        atomic_write_parquet(t.filter(pc.is_in(t.column("item_id"), value_set=pa.array(kept))),
                             wd / "item_serendipity.parquet")
        assert features.sync(wd)["materialized"]["item_serendipity"]["mode"] == "rebuild"
        a = _json_recommend(server.http, removed)
        b = _json_recommend(server.triton_http, removed)
        assert a["SOURCE"] == b["SOURCE"] == ["mllm"], (a, b)     # a miss on both paths
        assert a["CLUSTER_ID"] == b["CLUSTER_ID"]
