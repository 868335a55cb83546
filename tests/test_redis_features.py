"""Feast on a real Redis (issue 17 item 1): a redis-server started by the test (127.0.0.1,
free port, no persistence, stopped by PID). Materialization, a miss, a re-materialization that
removes rows, a key TTL expiry, and Redis going away mid-run (a clear fault within the socket
timeout, never a hang; recovery when it returns)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from serving_redis import redis_env, redis_server, write_scores  # noqa: F401 — fixtures

from serendip.errors import ConfigError
from serendip.serving.errors import ServerFault

pytest.importorskip("feast")
redis = pytest.importorskip("redis")


def _client(server):
    return redis.Redis(host=server.host, port=server.port, socket_timeout=2)


def _found(wd, ids):
    from serendip.platform import features

    return [r["item_id"] for r in features.OnlineFeatures(wd).get(ids) if r["found"]]


def test_sync_into_redis_miss_and_rows_removed(tmp_path, redis_env, monkeypatch):  # noqa: F811
    from feast.repo_config import load_repo_config

    from serendip.platform import features

    ids = [f"v{i}" for i in range(10)]
    write_scores(tmp_path, ids, "m1")
    features.sync(tmp_path)
    repo = features.repo_dir(tmp_path)
    assert load_repo_config(repo, repo / "feature_store.yaml").online_store.type == "redis"
    assert not (repo / "data" / "online_store.db").exists()          # not the sqlite store
    assert _client(redis_env).dbsize() == 10
    assert _found(tmp_path, ids + ["nope"]) == ids                    # "nope": a miss
    row = features.OnlineFeatures(tmp_path).serendipity("v3")
    assert row["cluster_ids"] == ["1.0.0", "1.1.0"] and row["model_version"] == "m1"
    assert features.OnlineFeatures(tmp_path).serendipity("nope") is None
    # a smaller re-score by another model: what left the table leaves Redis
    write_scores(tmp_path, ids[:4], "m2", clusters=("2.0.0",))
    assert features.sync(tmp_path)["materialized"]["item_serendipity"]["mode"] == "rebuild"
    assert _found(tmp_path, ids) == ids[:4] and _client(redis_env).dbsize() == 4
    assert features.OnlineFeatures(tmp_path).serendipity("v0")["model_version"] == "m2"
    # the store opened later without the connection string: one clear line, not a KeyError
    monkeypatch.delenv("FEAST_REDIS_CONNECTION_STRING")
    with pytest.raises(ConfigError, match="FEAST_REDIS_CONNECTION_STRING"):
        features.open_store(tmp_path)


def test_key_ttl_expiry_is_a_miss(tmp_path, redis_env, monkeypatch):  # noqa: F811
    from serendip.platform import features

    monkeypatch.setenv(features.KEY_TTL_ENV, "1")
    write_scores(tmp_path, ["v1", "v2"], "m1")
    features.sync(tmp_path)
    c = _client(redis_env)
    keys = list(c.scan_iter())
    assert len(keys) == 2 and all(0 < c.ttl(k) <= 1 for k in keys)   # set by Redis itself
    deadline = time.monotonic() + 30
    while _found(tmp_path, ["v1", "v2"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _found(tmp_path, ["v1", "v2"]) == [] and c.dbsize() == 0
    monkeypatch.setenv(features.KEY_TTL_ENV, "soon")
    with pytest.raises(ConfigError, match=features.KEY_TTL_ENV):
        features.open_store(tmp_path)


def _bounded(fn, limit_s: float = 30.0):
    """Run ``fn`` in a thread; a hang fails the test instead of hanging it."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit_s)
    assert not t.is_alive(), f"hung for {limit_s} s"
    return out


def test_redis_going_away_mid_run_and_coming_back(tmp_path, redis_env):  # noqa: F811
    from serendip.platform import features
    from serendip.platform.serving.lookup import ClusterLookup
    from serendip.platform.serving.redis_server import RedisServer

    write_scores(tmp_path, ["v1", "v2"], "m1")
    features.sync(tmp_path)
    lookup = ClusterLookup(tmp_path, "feast", retry_after_s=0.5)
    assert lookup.kind == "feast" and lookup("v1").cluster_id == "1.0.0"
    port = redis_env.port
    os.kill(redis_env.proc.pid, signal.SIGSTOP)      # Redis hangs: the socket timeout answers
    try:
        hung = _bounded(lambda: lookup("v1"))
    finally:
        os.kill(redis_env.proc.pid, signal.SIGCONT)
    assert isinstance(hung.get("error"), ServerFault) and "Timeout" in str(hung["error"])
    deadline = time.monotonic() + 10
    while "error" in _bounded(lambda: lookup("v1")) and time.monotonic() < deadline:
        time.sleep(0.1)                               # recovers once the retry window passed
    assert lookup("v1").cluster_id == "1.0.0"
    redis_env.stop()                                                   # Redis goes away
    first = _bounded(lambda: lookup("v1"))
    assert isinstance(first.get("error"), ServerFault), first
    assert "online store read failed" in str(first["error"])
    again = _bounded(lambda: lookup("v2"))          # inside the retry window: fails at once
    assert "unavailable" in str(again.get("error"))
    assert lookup.own_description("v1", 3) == ""   # the MLLM prompt loses only its context
    back = RedisServer(port=port, workdir=tmp_path).start()           # same address, empty
    try:
        assert features.sync(tmp_path, rebuild=True)["materialized"]["item_serendipity"][
            "mode"] == "rebuild"                  # a Redis without persistence comes back empty
        deadline = time.monotonic() + 10
        got = None
        while time.monotonic() < deadline:
            res = _bounded(lambda: lookup("v1"))
            if "value" in res:
                got = res["value"]
                break
            time.sleep(0.1)
        assert got is not None and got.cluster_id == "1.0.0" and got.source == "feast"
    finally:
        back.stop()


def test_score_cli_materializes_into_redis(tmp_path, redis_env):  # noqa: F811
    """`serendip score` with SERENDIP_FEAST_ONLINE_STORE=redis: the same command as in
    production writes item_serendipity and its rows into Redis (and nowhere else)."""
    from serendip.cli import main
    from serendip.data.io import read_table
    from serendip.platform import features
    from serendip.testing.scoring import ScoringFixtureConfig, build_scoring_workdir

    wd, model = build_scoring_workdir(tmp_path / "wd", ScoringFixtureConfig(items=60))
    assert main(["score", "--workdir", str(wd), "--model", str(model), "--k", "2", "--quiet",
                 "--batch-size", "16"]) == 0
    rows = read_table(wd, "item_serendipity").to_pylist()
    assert rows and not (features.repo_dir(wd) / "data" / "online_store.db").exists()
    got = features.OnlineFeatures(wd).get([r["item_id"] for r in rows],
                                          views=("item_serendipity", "item_clusters"))
    for want, row in zip(rows, got):
        assert row["found"] and row["cluster_ids"] == want["cluster_ids"]
        assert row["model_version"] == want["model_version"] and row["c1"]
    assert _client(redis_env).dbsize() >= len(rows)
