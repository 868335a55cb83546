"""Read Feast's Redis online store without Feast: for the Triton ``recommend`` model, whose
numpy<2 venv cannot hold Feast, so that it serves the same rows as the KServe
transformer (which reads through Feast).

Feast 0.67's Redis layout (``feast.infra.online_stores.redis``), reproduced here and checked
against Feast itself by ``tests/test_redis_serving.py``:

* one Redis hash per entity: key = ``serialize_entity_key`` (version 3: ``<I`` number of join
  keys, then per key ``<I`` STRING(2) ``<I`` length + name, then per value ``<I`` type ``<I``
  length + bytes) + the project name;
* a field per feature: the first 4 bytes of the little-endian murmur3-32 hash of
  ``"<view>:<feature>"``, holding a serialized ``feast.types.Value`` protobuf; and
  ``_ts:<view>``, the write timestamp.

Only the value kinds Serendip's views use are decoded (string, string list, double list, null);
anything else is refused loudly rather than guessed.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence

STRING = 2                       # feast ValueType.STRING


def entity_key(join_key: str, value: str) -> bytes:
    """Feast's ``serialize_entity_key`` (version 3) for one string join key."""
    k, v = join_key.encode("utf-8"), value.encode("utf-8")
    return (struct.pack("<I", 1) + struct.pack("<II", STRING, len(k)) + k
            + struct.pack("<II", STRING, len(v)) + v)


def feature_field(view: str, feature: str) -> bytes:
    """Feast's ``_mmh3``: murmur3-32 (unsigned) of ``view:feature``, 4 bytes little-endian."""
    import mmh3

    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


# ------------------------------------------------------------------ protobuf wire format
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, i
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message, in order."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = _varint(buf, i)
        elif wt == 1:
            val, i = buf[i:i + 8], i + 8
        elif wt == 2:
            n, i = _varint(buf, i)
            val, i = buf[i:i + n], i + n
        elif wt == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        yield num, wt, val


def decode_value(buf: bytes | None):
    """A serialized ``feast.types.Value`` → Python: string (field 2), string list (12), double
    list (15, packed or not), null (19) or an empty message → None.

    Raises:
        ValueError: another value kind (not used by Serendip's feature views).
    """
    if not buf:
        return None
    for num, wt, val in _fields(buf):
        if num == 2 and wt == 2:
            return val.decode("utf-8")
        if num == 12 and wt == 2:
            return [v.decode("utf-8") for n, w, v in _fields(val) if n == 1 and w == 2]
        if num == 15 and wt == 2:
            out: list[float] = []
            for n, w, v in _fields(val):
                if n == 1 and w == 2:
                    out += list(struct.unpack(f"<{len(v) // 8}d", v))
                elif n == 1 and w == 1:
                    out.append(struct.unpack("<d", v)[0])
            return out
        if num == 19:
            return None
        raise ValueError(f"feast Value field {num} is not decoded here")
    return None


def _parse_connection_string(conn: str) -> dict:
    """Feast's format: ``host:port[,key=value...]`` (values JSON-decoded when they parse)."""
    parts = [p.strip() for p in conn.split(",") if p.strip()]
    nodes = [p for p in parts if "=" not in p]
    if not nodes:
        raise ValueError("no host:port in the Redis connection string")
    host, _, port = nodes[0].partition(":")
    kw: dict = {"host": host, "port": int(port or 6379)}
    for p in parts:
        if "=" in p:
            k, v = p.split("=", 1)
            try:
                kw[k] = json.loads(v)
            except json.JSONDecodeError:
                kw[k] = v
    return kw


class FeastRedisReader:
    """Online rows of one Feast feature view straight from Redis (same answers as
    ``FeatureStore.get_online_features`` on that store)."""

    def __init__(self, connection_string: str, features: Sequence[str],
                 view: str = "item_serendipity", project: str = "serendip",
                 join_key: str = "item_id"):
        import redis
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        from serendip.platform.features import redis_connection_string

        kw = _parse_connection_string(redis_connection_string(connection_string))
        self.client = redis.Redis(retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), 1), **kw)
        self.features, self.view = tuple(features), view
        self.project, self.join_key = project.encode("utf-8"), join_key
        self._fields = [feature_field(view, f) for f in self.features]

    def get(self, ids: Sequence[str]) -> list[dict | None]:
        """Per id: ``{feature: value}``, or None when the store has no row for it."""
        pipe = self.client.pipeline(transaction=False)
        for i in ids:
            pipe.hmget(entity_key(self.join_key, str(i)) + self.project,
                       [*self._fields, f"_ts:{self.view}"])
        out: list[dict | None] = []
        for values in pipe.execute():
            if values[-1] is None:                 # no write timestamp: no row
                out.append(None)
                continue
            out.append({f: decode_value(v) for f, v in zip(self.features, values[:-1])})
        return out


class FeastSqliteReader:
    """Online rows of one Feast feature view straight from Feast's sqlite online store (table
    ``<project>_<view>``: one row per entity key and feature, the value a serialized
    ``feast.types.Value``), read-only — the embedded default's counterpart of
    :class:`FeastRedisReader`, so Triton's ``recommend`` reads the store the transformer reads
    instead of a snapshot that goes stale after a re-score."""

    def __init__(self, path: str, features: Sequence[str], view: str = "item_serendipity",
                 project: str = "serendip", join_key: str = "item_id"):
        import sqlite3
        from pathlib import Path

        self.features, self.join_key = tuple(features), join_key
        self.table = f"{project}_{view}"
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        self.conn = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=1.0)

    def get(self, ids: Sequence[str]) -> list[dict | None]:
        """Per id: ``{feature: value}``, or None when the store has no row for it."""
        keys = [entity_key(self.join_key, str(i)) for i in ids]
        rows: dict[bytes, dict] = {}
        if keys:
            marks = ",".join("?" * len(keys))
            for key, name, value in self.conn.execute(
                    f'SELECT entity_key, feature_name, value FROM "{self.table}" '  # noqa: S608
                    f"WHERE entity_key IN ({marks})", keys):
                if name in self.features:
                    rows.setdefault(bytes(key), {})[name] = decode_value(value)
        out: list[dict | None] = []
        for k in keys:
            got = rows.get(k)
            out.append(None if got is None else {f: got.get(f) for f in self.features})
        return out
