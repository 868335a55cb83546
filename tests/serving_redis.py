"""Helpers for the online-store tests: a ``redis-server`` fixture (127.0.0.1, free port, no
persistence, stopped by PID; skipped with the reason only where redis-server is absent) and a
work directory whose ``item_serendipity`` table is written directly (no model needed)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from serendip.data.io import atomic_write_parquet
from serendip.data.schemas import SCHEMAS


@pytest.fixture
def redis_server(tmp_path):
    from serendip.platform.serving.redis_server import RedisServer, redis_server_binary

    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server; "
                    ".ci/run installs it)")
    server = RedisServer(workdir=tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_env(redis_server, monkeypatch):
    """SERENDIP_FEAST_ONLINE_STORE=redis pointed at the fixture's server."""
    monkeypatch.setenv("SERENDIP_FEAST_ONLINE_STORE", "redis")
    monkeypatch.setenv("FEAST_REDIS_CONNECTION_STRING", redis_server.connection_string)
    return redis_server


def write_scores(wd: Path, ids: list[str], version: str, clusters=("1.0.0", "1.1.0"),
                 scored_at: datetime | None = None) -> None:
    """``<wd>/item_serendipity.parquet``: every id gets ``clusters`` (best first), scored by
    ``version``."""
    at = scored_at or datetime.now(timezone.utc) - timedelta(seconds=1)
    n = len(ids)
    table = pa.table({
        "item_id": ids,
        "cluster_ids": [list(clusters)] * n,
        "descriptions": [[f"desc {c}" for c in clusters]] * n,
        "scores": [[-0.1 * (j + 1) for j in range(len(clusters))]] * n,
        "model_version": [version] * n,
        "content_hash": [f"h{i}" for i in range(n)],
        "scored_at": pa.array([at] * n, pa.timestamp("us", tz="UTC")),
    }, schema=SCHEMAS["item_serendipity"])
    atomic_write_parquet(table, Path(wd) / "item_serendipity.parquet")
