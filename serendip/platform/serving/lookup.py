"""Where the recommend path finds a context item's serendipitous cluster, and its media.

* :class:`ClusterLookup` — Feast online store (``serendip.platform.features``) when a
  materialized feature repo exists (``<workdir>/feature_repo``, or ``feature_repo=`` in a
  cluster); otherwise a snapshot of ``item_serendipity.parquet`` (said at start-up, and in every
  answer's SOURCE). Both return ``None`` for an item not scored yet, which sends it to the MLLM.
* :class:`ItemCatalog` — title, thumbnail, frames and own-cluster description of known items,
  for the MLLM call on a miss.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa

from serendip.data.io import has_table, read_table, read_table_at
from serendip.errors import SerendipError
from serendip.serving.cluster_choice import ClusterChoice, top_choice
from serendip.serving.errors import ServerFault


class ClusterLookup:
    """item id → :class:`ClusterChoice` from Feast (default) or the scored table.

    When the online store fails (Redis gone: the read fails within its socket timeout), the
    call raises :class:`ServerFault` and, for ``retry_after_s``, fails at once without
    touching the store (the recommend flow asks the MLLM meanwhile); then it tries again, so
    serving recovers by itself when the store comes back.
    """

    def __init__(self, workdir: str | os.PathLike | None = None, source: str = "auto",
                 feature_repo: str | os.PathLike | None = None, retry_after_s: float = 2.0,
                 redis_connection: str | None = None,
                 sqlite_online: str | os.PathLike | None = None):
        self.kind = "none"
        self.retry_after_s = retry_after_s
        self._down_until = 0.0
        self._down_reason = ""
        self._online = None
        self._table: dict[str, ClusterChoice] = {}
        if redis_connection or sqlite_online:   # Feast's store read directly (Triton's venv)
            self._online = DirectOnline(redis_connection=redis_connection,
                                        sqlite_path=sqlite_online)
            self.kind = "feast"
            return
        repo = Path(feature_repo) if feature_repo else (
            Path(workdir) / "feature_repo" if workdir else None)
        feast_ready = repo is not None and (repo / "feature_store.yaml").exists()
        if source == "feast" or (source == "auto" and feast_ready):
            if not feast_ready:
                raise SerendipError(f"no Feast repo at {repo}", field="features",
                                    fix="run `serendip score` (it materializes), or use "
                                        "--features table")
            from serendip.platform.features import OnlineFeatures, open_store_at

            self._online = OnlineFeatures(store=open_store_at(repo))
            self.kind = "feast"
        elif source in ("auto", "table") and workdir and has_table(workdir, "item_serendipity"):
            t = read_table(workdir, "item_serendipity")
            for item, cids, descs in zip(t.column("item_id").to_pylist(),
                                         t.column("cluster_ids").to_pylist(),
                                         t.column("descriptions").to_pylist()):
                choice = top_choice(cids, descs, "table")
                if choice is not None:
                    self._table[item] = choice
            self.kind = "table"

    def _read(self, item_id: str, views: tuple[str, ...]) -> dict:
        if time.monotonic() < self._down_until:
            raise ServerFault(f"online store unavailable ({self._down_reason}); retrying in "
                              f"{self._down_until - time.monotonic():.1f} s")
        try:
            return self._online.get([item_id], views=views)[0]
        except Exception as e:  # noqa: BLE001 — redis/sqlite errors: a server-side fault
            self._down_reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            self._down_until = time.monotonic() + self.retry_after_s
            raise ServerFault(f"online store read failed ({self._down_reason})") from None

    def __call__(self, item_id: str) -> ClusterChoice | None:
        """The item's scored clusters (best first), ``None`` when not scored.

        Raises:
            ServerFault: the online store failed (or failed less than ``retry_after_s`` ago).
        """
        if self._online is not None:
            row = self._read(item_id, ("item_serendipity",))
            if not row["found"]:
                return None
            return top_choice(row["cluster_ids"], row["descriptions"], "feast")
        return self._table.get(item_id)

    def own_cluster(self, item_id: str, level: int) -> str | None:
        """The item's own level-``level`` cluster id from Feast's item_clusters view (None if
        unknown or the store is down)."""
        if self._online is None:
            return None
        try:
            row = self._read(item_id, ("item_clusters",))
        except ServerFault:
            return None
        value = row.get(f"c{level}")
        return str(value) if value else None

    def own_description(self, item_id: str, level: int) -> str:
        """The item's own level-``level`` cluster description from Feast (``""`` if unknown
        or the store is down)."""
        if self._online is None:
            return ""
        try:
            row = self._read(item_id, ("item_clusters",))
        except ServerFault:
            return ""
        return str(row.get(f"c{level}_description") or "")


class DirectOnline:
    """:class:`~serendip.platform.features.OnlineFeatures`' ``get`` over Feast's Redis or
    sqlite online-store layout without Feast (:mod:`.feast_redis`): same rows, same explicit
    misses."""

    def __init__(self, redis_connection: str | None = None,
                 sqlite_path: str | os.PathLike | None = None):
        from serendip.platform.features import FEATURES
        from serendip.platform.serving.feast_redis import FeastRedisReader, FeastSqliteReader

        self.features = FEATURES
        if redis_connection:
            self.readers = {v: FeastRedisReader(redis_connection, f, view=v)
                            for v, f in FEATURES.items()}
        else:
            self.readers = {v: FeastSqliteReader(str(sqlite_path), f, view=v)
                            for v, f in FEATURES.items()}

    def get(self, item_ids, views=("item_serendipity",)) -> list[dict]:
        rows: list[dict] = [{"item_id": i, "missing_views": []} for i in item_ids]
        for v in views:
            for row, got in zip(rows, self.readers[v].get(item_ids)):
                vals = got or dict.fromkeys(self.features[v])
                row.update(vals)
                if vals[self.features[v][0]] in (None, []):
                    row["missing_views"].append(v)
        for row in rows:
            row["found"] = not row["missing_views"]
        return rows


class ItemCatalog:
    """Known items' media for the MLLM fallback (the serving process owns the items table).

    Each known item's info carries its serendipitous ``candidates`` (paper §2, at
    curation.json's level and δ, or ``level``/``delta``) when the tree is at hand — the work
    directory's, or in a cluster the ``clusters`` table (path or URI) with each item's own
    cluster from ``own_cluster(item_id, level)`` (Feast's item_clusters view) — so the MLLM
    fallback answers only with them (``None``: unknown).

    ``workdir`` gives items + item_clusters + clusters (+ curation.json's level); in a cluster,
    ``items`` is a parquet path or URI (pyarrow filesystems: s3://, gs://, ...) and the own-
    cluster description comes from ``describe(item_id, level)`` (Feast's item_clusters view).
    Relative media paths resolve against ``base_dir`` (default: the work directory).
    Without a curation.json (a bare cluster tree), l and δ are ``level``/``delta`` or
    :class:`~serendip.curation.CurationConfig`'s defaults and there is no prompt manifest.

    Raises:
        ConfigError: the work directory's curation.json lacks a setting or is malformed
            (:func:`serendip.curation.read_curation`). SchemaError: a malformed table.
    """

    def __init__(self, workdir: str | os.PathLike | None = None, items: str | None = None,
                 describe=None, level: int | None = None,
                 base_dir: str | os.PathLike | None = None, clusters: str | None = None,
                 own_cluster=None, delta: int | None = None):
        self.items: dict[str, dict] = {}
        self.describe = describe
        self.own_cluster = own_cluster
        self._sibs: dict[str, list[str]] = {}
        wd = Path(workdir) if workdir else None
        # l and δ: the arguments, else curation.json's (read strictly); a bare cluster tree
        # without a curation is served at CurationConfig's own l and δ (the paper's 3 and 1)
        from serendip.curation import CurationConfig, read_curation

        cur = read_curation(wd, missing_ok=True) if wd is not None else None
        bare = CurationConfig()
        self.level = level or (cur.level if cur else bare.level)
        self.delta = delta or (cur.delta if cur else bare.delta)
        # the prompt manifest the served model was curated with
        self.prompt = cur.prompt if cur else None
        if clusters and own_cluster is not None:
            # in a cluster: the tree's clusters table + each item's own cluster from Feast
            from serendip.candidates import sibling_map

            self._sibs = sibling_map(read_table_at(clusters, "clusters"), self.level,
                                     self.delta)
        table = None
        if items:   # validated like every table read: ids verbatim, parquet or CSV
            table = read_table_at(items, "items").select(["item_id", "title", "thumbnail",
                                                          "frames"])
        elif wd is not None and has_table(wd, "items"):
            table = read_table(wd, "items").select(["item_id", "title", "thumbnail", "frames"])
        if table is None:
            return
        own: dict[str, str] = {}
        cands: dict[str, list[str]] = {}
        if wd is not None and has_table(wd, "item_clusters") and has_table(wd, "clusters"):
            from serendip.candidates import sibling_map

            cl = read_table(wd, "clusters")
            desc = dict(zip(cl.column("cluster_id").to_pylist(),
                            cl.column("description").to_pylist()))
            ic = read_table(wd, "item_clusters")
            pairs = list(zip(ic.column("item_id").to_pylist(),
                             ic.column(f"c{self.level}").to_pylist()))
            own = {i: desc.get(c, "") for i, c in pairs}
            # the MLLM fallback answers only with the item's serendipitous candidates (§2)
            sibs = sibling_map(cl, self.level, self.delta)
            cands = {i: sibs[c] for i, c in pairs if c in sibs}
        if base_dir is None and wd is not None:    # the one rule (serendip.data.media)
            from serendip.data.media import media_root

            base_dir = media_root(wd)
        base = str(base_dir) if base_dir else None
        frames_of = _model_frames(self.prompt)
        for row in _rows(table):
            row["frames"] = frames_of(row.get("frames"))
            row["context_description"] = own.get(row["item_id"], "")
            row["candidates"] = cands.get(row["item_id"]) if cands else None
            row["base_dir"] = base
            self.items[row.pop("item_id")] = row

    def __call__(self, item_id: str) -> dict | None:
        info = self.items.get(item_id)
        if info is not None and not info["context_description"] and self.describe is not None:
            info = dict(info, context_description=self.describe(item_id, self.level))
        if info is not None and info.get("candidates") is None and self._sibs:
            own = self.own_cluster(item_id, self.level)
            if own in self._sibs:
                info = dict(info, candidates=self._sibs[own])
        return info

    def __len__(self) -> int:
        return len(self.items)


def _rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def _model_frames(prompt):
    """An item's frames as the model's prompt samples them (:func:`serendip.prompts.
    select_images`, as curation sampled the training examples), so a catalogue item with more
    frames than a request may carry (``MAX_FRAMES``) reaches the model with the frames it was
    trained on, not a re-spacing of them; unchanged without a frame prompt."""
    if prompt is None or not prompt.uses_images or prompt.use_thumbnail:
        return lambda frames: frames
    from serendip.prompts import select_images

    def sample(frames):
        if not frames or all(isinstance(f, str) and not f.strip() for f in frames):
            return frames
        return select_images(prompt, None, list(frames))
    return sample


def RedisOnline(connection_string: str) -> DirectOnline:  # noqa: N802 — reads as the class
    return DirectOnline(redis_connection=connection_string)
