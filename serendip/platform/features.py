"""Feast adapter: the per-run feature repo, offline sources, apply, materialize, online reads.

* :func:`prepare_repo` copies the packaged ``feature_repo/`` (package data) into
  ``<workdir>/feature_repo`` (registry, sqlite online store and offline parquet under its
  ``data/``), so runs never share a store; with ``SERENDIP_FEAST_ONLINE_STORE=redis`` the copy
  uses the Redis ``feature_store.yaml``.
* :func:`write_sources` turns the work directory's tables into the feature views' offline
  sources (``item_clusters`` + cluster descriptions; ``item_serendipity`` as scored).
* :func:`sync` = prepare + sources + ``store.apply`` + ``materialize_incremental`` — the Python
  API, not the CLI (``import feast`` alone costs seconds; apply is ~0.02 s). A view
  never materialized before gets a full materialization first, so rows scored long ago (older
  than the TTL window ``materialize_incremental`` starts from) still reach a fresh store.
* :class:`OnlineFeatures` is the serving read: one ``get_online_features`` call for all ids of a
  request, and an explicit ``found: False`` row for ids the store does not know (PEERS.md:
  a missing id must not break the request).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from serendip.data.io import atomic_write_bytes, atomic_write_parquet, find_table, has_table, read_table
from serendip.errors import ConfigError, SerendipError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

REPO_ENV = "SERENDIP_FEATURE_REPO"            # a feature_repo/ folder to copy (default: ours)
ONLINE_ENV = "SERENDIP_FEAST_ONLINE_STORE"    # "sqlite" (default) or "redis"
KEY_TTL_ENV = "SERENDIP_FEAST_KEY_TTL_S"      # Redis rows expire this long after a write
VIEWS = ("item_clusters", "item_serendipity")
FEATURES: dict[str, tuple[str, ...]] = {
    "item_clusters": ("c1", "c2", "c3", "c4", "c1_description", "c2_description",
                      "c3_description", "c4_description"),
    "item_serendipity": ("cluster_ids", "descriptions", "scores", "model_version"),
}


def source_repo() -> Path | Traversable:
    """The Feast repo to copy: ``$SERENDIP_FEATURE_REPO``, else the one shipped as package data
    (``serendip/platform/feature_repo``, found wherever the package is installed).

    Raises:
        ConfigError: the folder has no ``definitions.py``."""
    env = os.environ.get(REPO_ENV)
    repo = Path(env) if env else resources.files("serendip.platform") / "feature_repo"
    if not (repo / "definitions.py").is_file():
        raise ConfigError(f"no Feast repo at {repo} (definitions.py missing)", field=REPO_ENV,
                          fix="unset SERENDIP_FEATURE_REPO (the packaged repo) or point it at "
                              "a folder holding definitions.py and feature_store.yaml")
    return repo


def repo_dir(workdir: str | os.PathLike) -> Path:
    return Path(workdir) / "feature_repo"


def _online_yaml(src: Path | Traversable) -> Path | Traversable:
    kind = os.environ.get(ONLINE_ENV, "sqlite").strip().lower()
    if kind == "sqlite":
        return src / "feature_store.yaml"
    if kind == "redis":
        if not os.environ.get("FEAST_REDIS_CONNECTION_STRING"):
            raise ConfigError("Redis online store selected without a connection string",
                              field="FEAST_REDIS_CONNECTION_STRING",
                              fix='export FEAST_REDIS_CONNECTION_STRING="host:6379,password=..."')
        return src / "feature_store.redis.yaml"
    raise ConfigError(f"unknown online store {kind!r}", field=ONLINE_ENV,
                      fix="use sqlite (default) or redis")


def prepare_repo(workdir: str | os.PathLike) -> Path:
    """Copy the declarations into ``<workdir>/feature_repo`` (rewritten only when changed)."""
    src, dst = source_repo(), repo_dir(workdir)
    (dst / "data").mkdir(parents=True, exist_ok=True)
    for name, path in (("feature_store.yaml", _online_yaml(src)),
                       ("definitions.py", src / "definitions.py")):
        data = path.read_bytes()
        target = dst / name
        if not target.exists() or target.read_bytes() != data:
            atomic_write_bytes(target, data)
    return dst


# ------------------------------------------------------------------ offline sources
def item_clusters_source(workdir: str | os.PathLike) -> pa.Table | None:
    """item_clusters + each level's description, event time = when item_clusters was written."""
    wd = Path(workdir)
    if not has_table(wd, "item_clusters"):
        return None
    ic = read_table(wd, "item_clusters")
    written = datetime.fromtimestamp(find_table(wd, "item_clusters").stat().st_mtime,
                                     tz=timezone.utc)
    cols = {"item_id": ic.column("item_id")}
    desc = None
    if has_table(wd, "clusters"):
        cl = read_table(wd, "clusters", columns=["cluster_id", "description"])
        desc = cl
    for lvl in (1, 2, 3, 4):
        c = ic.column(f"c{lvl}")
        cols[f"c{lvl}"] = c
        if desc is not None:
            idx = pc.index_in(c, value_set=desc.column("cluster_id"))
            cols[f"c{lvl}_description"] = pc.take(desc.column("description"), idx)
        else:
            cols[f"c{lvl}_description"] = pa.nulls(ic.num_rows, pa.string())
    cols["event_timestamp"] = pa.array([written] * ic.num_rows, pa.timestamp("us", tz="UTC"))
    return pa.table(cols)


def item_serendipity_source(workdir: str | os.PathLike) -> pa.Table | None:
    wd = Path(workdir)
    if not has_table(wd, "item_serendipity"):
        return None
    return read_table(wd, "item_serendipity").select(
        ["item_id", "cluster_ids", "descriptions", "scores", "model_version", "scored_at"])


def rebuild_marker(workdir: str | os.PathLike, view: str) -> Path:
    """``data/<view>.rebuild``: rows left the view's offline source, so its online table must
    be cleared and fully re-materialized (written before the source changes, removed after the
    rebuild: a crash in between rebuilds on the next sync)."""
    return repo_dir(workdir) / "data" / f"{view}.rebuild"


def _source_ids(path: Path) -> set[str]:
    import pyarrow.parquet as pq

    try:
        return set(pq.read_table(path, columns=["item_id"]).column("item_id").to_pylist())
    except (pa.ArrowInvalid, OSError, KeyError):
        return set()


def write_sources(workdir: str | os.PathLike, tables_dir: str | os.PathLike | None = None
                  ) -> dict[str, int]:
    """Write the offline parquet sources from the tables in ``tables_dir`` (default
    ``workdir``) that exist; returns rows per view. When ids leave a source (a smaller
    coverage, another model, a rebuilt tree), the view is marked for an online rebuild
    (:func:`rebuild_marker`): what leaves the offline table leaves the online store."""
    data = repo_dir(workdir) / "data"
    rows = {}
    for view, make in (("item_clusters", item_clusters_source),
                       ("item_serendipity", item_serendipity_source)):
        table = make(tables_dir or workdir)
        if table is None:
            continue
        path = data / f"{view}.parquet"
        if not path.exists() or _digest_table(table) != _digest_file(path):
            if path.exists():
                gone = _source_ids(path) - set(table.column("item_id").to_pylist())
                if gone:
                    atomic_write_bytes(rebuild_marker(workdir, view),
                                       f"{len(gone)} ids left the source\n".encode())
            atomic_write_parquet(table, path)
        rows[view] = table.num_rows
    return rows


def _digest_table(table: pa.Table) -> str:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def _digest_file(path: Path) -> str:
    import pyarrow.parquet as pq

    try:
        return _digest_table(pq.read_table(path))
    except (pa.ArrowInvalid, OSError):
        return ""


# ------------------------------------------------------------------ feast
def _quiet() -> None:
    os.environ.setdefault("FEAST_USAGE", "False")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def load_definitions(repo: Path) -> list:
    """The Feast objects declared in ``repo/definitions.py`` (imported under a unique name)."""
    _quiet()
    from feast import Entity, FeatureService, FeatureView

    name = "serendip_feast_defs_" + hashlib.sha1(str(repo.resolve()).encode()).hexdigest()[:10]
    spec = importlib.util.spec_from_file_location(name, repo / "definitions.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return [v for v in vars(module).values() if isinstance(v, (Entity, FeatureView, FeatureService))]


REDIS_TIMEOUT_S = 1.0      # socket (connect and read) timeout when the connection string has none


def redis_connection_string(conn: str, timeout_s: float = REDIS_TIMEOUT_S) -> str:
    """``conn`` with ``socket_timeout`` / ``socket_connect_timeout`` added when absent, so a
    Redis that goes away fails a read in about ``timeout_s`` instead of hanging the request
    (Feast passes ``key=value`` parts of its connection string to ``redis.Redis``)."""
    keys = {part.split("=", 1)[0].strip() for part in conn.split(",") if "=" in part}
    extra = [f"{k}={timeout_s:g}" for k in ("socket_timeout", "socket_connect_timeout")
             if k not in keys]
    return ",".join([conn, *extra]) if extra else conn


def open_store_at(repo: str | os.PathLike):
    """A FeatureStore on the Feast repo folder ``repo``; a Redis online store gets socket
    timeouts (:func:`redis_connection_string`).

    Raises:
        SerendipError: ``repo`` has no feature_store.yaml.
    """
    _quiet()
    from feast import FeatureStore
    from feast.repo_config import load_repo_config

    repo = Path(repo)
    if not (repo / "feature_store.yaml").exists():
        raise SerendipError(f"no Feast repo in {repo}", field="workdir",
                            fix="run `serendip score --workdir W` (it applies and materializes)")
    cfg = load_repo_config(repo, repo / "feature_store.yaml")
    if getattr(cfg.online_store, "type", "") == "redis":
        conn = cfg.online_store.connection_string or ""
        if not re.fullmatch(r"[^\s=:,${}]+:\d+", conn.split(",")[0].strip()):
            raise ConfigError(f"the Feast repo {repo} uses the Redis online store, but the "
                              "connection string is empty or has no host:port",
                              field="FEAST_REDIS_CONNECTION_STRING",
                              fix='export FEAST_REDIS_CONNECTION_STRING="host:6379,password=..."')
        cfg.online_store.connection_string = redis_connection_string(
            cfg.online_store.connection_string)
        ttl = key_ttl_s()
        if ttl is not None:
            cfg.online_store.key_ttl_seconds = ttl
    store = FeatureStore(repo_path=str(repo), config=cfg)
    if getattr(cfg.online_store, "type", "") == "redis":
        _bound_redis_retries(store)
    return store


def _bound_redis_retries(store) -> None:
    """redis-py retries a failed command 3 times with backoff up to seconds; on the serving
    path one quick retry (a pooled connection that died with a restarted server) is enough:
    a Redis that is gone fails a read in about the socket timeout."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    online = store._get_provider().online_store      # noqa: SLF001 — Feast builds the client
    client = online._get_client(store.config.online_store)   # noqa: SLF001
    if hasattr(client, "set_retry"):
        client.set_retry(Retry(ExponentialBackoff(cap=0.1, base=0.01), 1))


def key_ttl_s() -> int | None:
    """``$SERENDIP_FEAST_KEY_TTL_S``: seconds a Redis row lives after its last write (Feast's
    ``key_ttl_seconds``; unset: rows live until removed). An expired row is a miss.

    Raises:
        ConfigError: not a positive integer.
    """
    raw = os.environ.get(KEY_TTL_ENV, "").strip()
    if not raw:
        return None
    try:
        ttl = int(raw)
    except ValueError:
        ttl = 0
    if ttl < 1:
        raise ConfigError(f"{raw!r} is not a positive number of seconds", field=KEY_TTL_ENV,
                          fix="set a whole number of seconds >= 1, or unset it")
    return ttl


def open_store(workdir: str | os.PathLike):
    """A FeatureStore on ``<workdir>/feature_repo`` (which must have been prepared)."""
    return open_store_at(repo_dir(workdir))


def apply(workdir: str | os.PathLike):
    """Prepare the repo copy and ``store.apply`` its declarations; returns the store."""
    repo = prepare_repo(workdir)
    store = open_store(workdir)
    store.apply(load_definitions(repo))
    return store


def clear_online(store, view: str) -> None:
    """Delete every online row of ``view`` (sqlite: drop and re-create its table; Redis: the
    view's hash fields of every key) through the online store's own ``update``."""
    fv = store.get_feature_view(view)
    online = store._get_provider().online_store    # noqa: SLF001 — no public per-view delete
    args = dict(entities_to_delete=[], entities_to_keep=[], partial=True)
    online.update(store.config, tables_to_delete=[fv], tables_to_keep=[], **args)
    online.update(store.config, tables_to_delete=[], tables_to_keep=[fv], **args)


def materialize(store, views: Sequence[str], end: datetime | None = None) -> dict:
    """``materialize_incremental`` up to ``end`` (now); a never-materialized view is first
    materialized from the oldest row of its source. A view marked by :func:`write_sources`
    (ids left its source) is cleared online and fully re-materialized (mode ``rebuild``)."""
    end = end or datetime.now(timezone.utc)
    out: dict = {}
    for view in views:
        fv = store.get_feature_view(view)
        t0 = time.perf_counter()
        marker = Path(store.repo_path) / "data" / f"{view}.rebuild"
        if marker.exists():
            clear_online(store, view)
            start = _oldest(store, view) or end - fv.ttl
            store.materialize(start_date=start - timedelta(seconds=1), end_date=end,
                              feature_views=[view])
            marker.unlink()
            out[view] = {"mode": "rebuild"}
        elif not fv.materialization_intervals:
            start = _oldest(store, view) or end - fv.ttl
            store.materialize(start_date=start - timedelta(seconds=1), end_date=end,
                              feature_views=[view])
            out[view] = {"mode": "full"}
        else:
            store.materialize_incremental(end_date=end, feature_views=[view])
            out[view] = {"mode": "incremental"}
        out[view]["s"] = round(time.perf_counter() - t0, 3)
    return out


def _oldest(store, view: str) -> datetime | None:
    import pyarrow.parquet as pq

    path = Path(store.repo_path) / "data" / f"{view}.parquet"
    fv = store.get_feature_view(view)
    col = fv.batch_source.timestamp_field
    if not path.exists():
        return None
    mn = pc.min(pq.read_table(path, columns=[col]).column(col)).as_py()
    return mn.replace(tzinfo=mn.tzinfo or timezone.utc) if mn else None


def sync(workdir: str | os.PathLike, tables_dir: str | os.PathLike | None = None,
         end: datetime | None = None, rebuild: bool = False) -> dict:
    """Write sources (from ``tables_dir``, default ``workdir``), apply, and materialize the
    views that have data into ``<workdir>/feature_repo``'s stores; returns stats.
    ``rebuild``: clear and fully re-materialize every view (an online store that lost its
    data, e.g. a Redis restarted without persistence)."""
    t0 = time.perf_counter()
    prepare_repo(workdir)
    rows = write_sources(workdir, tables_dir)
    if rebuild:
        for view in rows:
            atomic_write_bytes(rebuild_marker(workdir, view), b"rebuild requested\n")
    store = apply(workdir)
    mat = materialize(store, [v for v in VIEWS if v in rows], end)
    return {"repo": str(repo_dir(workdir)), "rows": rows, "materialized": mat,
            "s": round(time.perf_counter() - t0, 3)}


class OnlineFeatures:
    """Online reads for the serving path: one Feast call per request, explicit misses."""

    def __init__(self, workdir: str | os.PathLike | None = None, store=None):
        self.store = store if store is not None else open_store(workdir)

    def get(self, item_ids: Sequence[str],
            views: Sequence[str] = ("item_serendipity",)) -> list[dict]:
        """One row per id: ``{"item_id", "found", "missing_views", <features>}``.

        ``found`` is True only when every requested view has the item; features of a missing
        view are ``None`` (never a default that looks real).
        """
        unknown = [v for v in views if v not in FEATURES]
        if unknown:
            raise SerendipError(f"unknown feature view(s) {unknown}", field="views",
                                fix=f"use {list(FEATURES)}")
        if not item_ids:
            return []
        refs = [f"{v}:{f}" for v in views for f in FEATURES[v]]
        res = self.store.get_online_features(
            features=refs, entity_rows=[{"item_id": str(i)} for i in item_ids]).to_dict()
        out = []
        for j, item in enumerate(item_ids):
            row: dict = {"item_id": item}
            missing = []
            for v in views:
                vals = {f: res[f][j] for f in FEATURES[v]}
                key = FEATURES[v][0]
                if vals[key] is None or vals[key] == []:
                    missing.append(v)
                row.update(vals)
            row["missing_views"] = missing
            row["found"] = not missing
            out.append(row)
        return out

    def serendipity(self, item_id: str) -> dict | None:
        """The item's scored serendipitous clusters, or ``None`` when not scored."""
        row = self.get([item_id])[0]
        return row if row["found"] else None
