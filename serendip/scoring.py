"""Batch scoring (paper §3.2): the MLLM's serendipitous clusters for the popular corpus.

* **Coverage** — the most popular items until ``coverage`` of all impressions (default 0.8, the
  paper's figure) is reached; the long tail is left to on-demand inference at serving.
* **New items** — items missing from ``item_clusters`` are first placed in the existing tree
  (:func:`serendip.tree.assign_items`), since the prompt carries the item's own cluster.
* **Incremental** — an item is re-scored only when no row with the same model version and the
  same content hash (title, media references, context description) exists (with at least
  ``k`` clusters; rows with more are cut to ``k``); a new model version rescores everything.
* **Resumable** — results are committed in chunk files under ``<workdir>/scoring/``, each
  written atomically and recorded with its SHA-256 in ``manifest.json`` (also atomic). A
  restarted run reuses every committed chunk; a chunk whose checksum does not match (or a
  file the manifest never recorded) is discarded and its items are scored again. The final
  ``item_serendipity.parquet`` is written atomically, then the chunks are cleared — a crash
  in between only leaves rows the next run deduplicates by item id.
* **Output** — ``item_serendipity`` holds exactly the selected items, in popularity order;
  items that fell out of the selection are dropped (serving asks the MLLM for them).
* **Only serendipitous answers** — each item's answers are restricted to its candidate clusters
  (paper §2, :mod:`serendip.candidates`): the level-l clusters that share its own cluster's
  level-(l−δ) ancestor, its own cluster excluded (δ: ``ScoringConfig.delta``, else the work
  directory's ``curation.json``, else 1). A predictor whose ``predict`` takes ``candidates``
  ranks exactly them (likelihood over the subset); another one is asked for more answers and
  its non-candidate answers are dropped. An item whose cluster has no candidate fails with a
  reason; a reusable row that names a non-candidate is scored again.
* **Batching** — the predictor decodes ``batch_size`` items at a time under the trie; items are
  ordered by prompt length inside a chunk so that left padding stays small.
* **Row-level failures** — an item that cannot be scored (missing or unreadable media, no
  media for an image prompt, no cluster description) does not stop the run: a failing batch is
  retried item by item, each failure goes to ``scoring_errors.parquet`` (item id, stage,
  reason), the rest are scored, and the count is reported. The run fails only when the failed
  share of the selected items exceeds ``max_error_rate`` (it stops as soon as that is certain;
  committed chunks are kept). Failed items are never committed, so the next run retries them.

A file lock keeps two runs from scoring the same work directory at once (taken before anything
is written, item_clusters included).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from serendip.data.io import atomic_write_bytes, find_table, has_table, read_table, table_path, write_table
from serendip.data.media import MEDIA_BASE_FILE, media_root, resolve_media
from serendip.data.schemas import SCHEMAS
from serendip.errors import ConfigError, SerendipError

SCORING_DIR = "scoring"
MANIFEST = "manifest.json"
ERRORS_FILE = "scoring_errors.parquet"
ERRORS_SCHEMA = pa.schema([("item_id", pa.string()), ("stage", pa.string()),
                           ("reason", pa.string()), ("model_version", pa.string()),
                           ("failed_at", pa.timestamp("us", tz="UTC"))])
ROW_ERRORS = (SerendipError, OSError, ValueError)   # what one item's inputs can raise


@dataclass
class ScoringConfig:
    coverage: float = 0.8           # share of impressions the scored items must cover
    k: int = 3                      # clusters per item, best first
    batch_size: int = 64            # items per constrained-decoding batch
    chunk_size: int = 256           # items per committed chunk (the unit a crash can lose)
    constrained: bool = True
    assign_new: bool = True         # place items missing from item_clusters in the tree
    progress: bool = True
    shard: int = 0                  # this worker's shard of the selected corpus ...
    num_shards: int = 1             # ... out of this many (KFP ParallelFor fans out over them)
    max_error_rate: float = 0.01    # fail the run above this share of failed items, in [0, 1]
    delta: int | None = None        # candidates' δ (None: curation.json's, else 1)

    def check(self) -> None:
        if not (isinstance(self.coverage, (int, float)) and 0 < self.coverage <= 1):
            raise ConfigError(f"coverage must be in (0, 1], got {self.coverage!r}",
                              field="coverage", fix="use e.g. --coverage 0.8 (80% of impressions)")
        for name in ("k", "batch_size", "chunk_size", "num_shards"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", field=name,
                                  fix=f"set {name} to a positive integer")
        if not 0 <= self.shard < self.num_shards:
            raise ConfigError(f"shard {self.shard} of {self.num_shards}", field="shard",
                              fix="use 0 <= shard < num_shards")
        if isinstance(self.max_error_rate, bool) or not (
                isinstance(self.max_error_rate, (int, float)) and 0 <= self.max_error_rate <= 1):
            raise ConfigError(f"must be in [0, 1], got {self.max_error_rate!r}",
                              field="max_error_rate",
                              fix="use e.g. --max-error-rate 0.01 (1% of the selected items)")
        if self.delta is not None and (isinstance(self.delta, bool)
                                       or not isinstance(self.delta, int) or self.delta < 1):
            raise ConfigError(f"must be an integer >= 1, got {self.delta!r}", field="delta",
                              fix="use the δ the model was curated with (curation.json)")


@dataclass
class ScoringResult:
    table: pa.Table
    stats: dict = field(default_factory=dict)


# ------------------------------------------------------------------ coverage
def select_by_coverage(items: pa.Table, coverage: float) -> tuple[pa.Table, dict]:
    """The smallest most-popular prefix of ``items`` whose impressions reach ``coverage`` of
    the total (ties by item id); returns (items in popularity order, stats)."""
    if not 0 < coverage <= 1:
        raise ConfigError(f"coverage must be in (0, 1], got {coverage!r}", field="coverage",
                          fix="use e.g. 0.8")
    n = items.num_rows
    if n == 0:
        raise SerendipError("the items table is empty", field="items",
                            fix="put the catalogue in items.parquet or items.csv (README 'Data contracts')")
    imp = np.asarray(items.column("impressions").to_numpy(zero_copy_only=False), np.float64)
    ids = np.asarray(items.column("item_id").to_pylist(), dtype=object)
    order = np.lexsort((ids, -imp))
    total = imp.sum()
    if total <= 0:
        count = n                                   # no traffic recorded: everything
    else:
        cum = np.cumsum(imp[order]) / total
        count = int(np.searchsorted(cum, coverage - 1e-12) + 1)
    count = min(count, n)
    covered = float(imp[order[:count]].sum() / total) if total > 0 else 1.0
    stats = {"items": n, "selected": count, "selected_share": round(count / n, 4),
             "coverage_target": coverage, "coverage_achieved": round(covered, 4)}
    return items.take(order[:count]), stats


# ------------------------------------------------------------------ content hash
def _media_key(ref) -> str:
    if ref is None:
        return ""
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return "sha256:" + hashlib.sha256(bytes(ref)).hexdigest()
    return str(ref)


def content_hash(title: str | None, thumbnail, frames, context_description: str | None) -> str:
    """What the prompt is built from: title, media references (bytes hashed), and the item's
    own cluster description. A change in any of them makes the item "changed"."""
    payload = json.dumps([title or "", _media_key(thumbnail),
                          [_media_key(f) for f in (frames or [])], context_description or ""])
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


# ------------------------------------------------------------------ chunk store
class ChunkStore:
    """Committed result chunks + their manifest under ``<workdir>/scoring``."""

    def __init__(self, workdir: str | os.PathLike):
        self.dir = Path(workdir) / SCORING_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.dir / MANIFEST
        self._lock_fd: int | None = None

    def lock(self) -> None:
        import fcntl

        fd = os.open(self.dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SerendipError(f"another scoring run is using {self.dir}", field="workdir",
                                fix="wait for it to finish (a killed run releases the lock)"
                                ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"format": 1, "chunks": []}
        try:
            data = json.loads(self.manifest_path.read_text())
            if not isinstance(data.get("chunks"), list):
                raise ValueError
            return data
        except (ValueError, OSError):
            return {"format": 1, "chunks": []}       # unreadable manifest: redo the chunks

    def load(self) -> tuple[pa.Table | None, dict]:
        """Rows of every intact committed chunk; discards corrupt or unrecorded files."""
        manifest = self._manifest()
        good, tables, corrupt = [], [], []
        for entry in manifest["chunks"]:
            path = self.dir / entry["file"]
            try:
                data = path.read_bytes()
                if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                    raise ValueError("checksum mismatch")
                t = pq.read_table(io.BytesIO(data))
                if t.num_rows != entry["rows"]:
                    raise ValueError("row count mismatch")
                tables.append(t.cast(SCHEMAS["item_serendipity"]))
                good.append(entry)
            except (OSError, ValueError, pa.ArrowInvalid):
                corrupt.append(entry["file"])
                path.unlink(missing_ok=True)
        recorded = {e["file"] for e in good}
        stray = [p for p in self.dir.iterdir()
                 if p.name.startswith(("chunk-", ".chunk-")) and p.name not in recorded]
        for p in stray:                              # uncommitted (killed before the manifest)
            p.unlink(missing_ok=True)
        if len(good) != len(manifest["chunks"]):
            manifest["chunks"] = good
            self._write_manifest(manifest)
        table = pa.concat_tables(tables) if tables else None
        return table, {"chunks": len(good), "corrupt_chunks": corrupt,
                       "stray_files": len(stray)}

    def commit(self, table: pa.Table) -> str:
        manifest = self._manifest()
        seq = max((e["seq"] for e in manifest["chunks"]), default=-1) + 1
        name = f"chunk-{seq:06d}.parquet"
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        atomic_write_bytes(self.dir / name, data)
        manifest["chunks"].append({"seq": seq, "file": name, "rows": table.num_rows,
                                   "sha256": hashlib.sha256(data).hexdigest()})
        self._write_manifest(manifest)
        return name

    def _write_manifest(self, manifest: dict) -> None:
        atomic_write_bytes(self.manifest_path, json.dumps(manifest, indent=1).encode())

    def clear(self) -> None:
        """Drop the chunks once the final table holds them: the manifest goes first, so a
        crash half-way leaves only unrecorded files, which the next :meth:`load` deletes."""
        manifest = self._manifest()
        self.manifest_path.unlink(missing_ok=True)
        for e in manifest["chunks"]:
            (self.dir / e["file"]).unlink(missing_ok=True)


# ------------------------------------------------------------------ new items
def assign_new_items(workdir: str | os.PathLike, items: pa.Table, item_clusters: pa.Table,
                     embed: Callable[[pa.Table], np.ndarray] | None = None,
                     reference: int = 256, seed: int = 0) -> pa.Table:
    """item_clusters extended with rows for items that have none, placed in the saved tree.

    ``embed(items) -> embeddings`` defaults to the cluster stage's embeddings (its
    EmbeddingConfig is read from the tree). Embedding scales each feature block over the batch
    it sees, so the new items are embedded together with a fixed sample of ``reference``
    already-clustered items — close to the catalogue's scaling without re-embedding it all
    (on the synthetic platform the placements match a full re-embedding).
    """
    known = set(item_clusters.column("item_id").to_pylist())
    ids = items.column("item_id").to_pylist()
    new_pos = [p for p, i in enumerate(ids) if i not in known]
    if not new_pos:
        return item_clusters
    from serendip.tree import ClusterTree, assign_items

    wd = Path(workdir)
    tree = ClusterTree.load(wd / "cluster_tree")
    if embed is None:
        from serendip.config import from_dict
        from serendip.embeddings import EmbeddingConfig, item_embeddings

        # the cluster stage records the EmbeddingConfig it used in the tree's stats
        ecfg = from_dict(EmbeddingConfig, tree.stats.get("embedding", {}).get("config", {}))

        def embed(t: pa.Table) -> np.ndarray:
            return item_embeddings(t, ecfg, base_dir=media_root(wd))

    old_pos = np.asarray([p for p, i in enumerate(ids) if i in known], np.int64)
    rng = np.random.default_rng(seed)
    ref = np.sort(rng.choice(old_pos, min(reference, len(old_pos)), replace=False))
    emb = embed(items.take(np.concatenate([np.asarray(new_pos, np.int64), ref])))
    rows = assign_items(tree, [ids[p] for p in new_pos], emb[:len(new_pos)])
    return pa.concat_tables([item_clusters.cast(SCHEMAS["item_clusters"]), rows])


# ------------------------------------------------------------------ scoring
def _inputs(sel: pa.Table, item_clusters: pa.Table, clusters: pa.Table, level: int,
            needs_media: bool) -> tuple[list[dict | None], list[str], dict[int, str]]:
    """Predictor inputs and content hashes for the selected items (same order); an item that
    cannot be prompted gets ``None`` and its reason in the returned ``{position: reason}``."""
    ic = dict(zip(item_clusters.column("item_id").to_pylist(),
                  item_clusters.column(f"c{level}").to_pylist()))
    desc = dict(zip(clusters.column("cluster_id").to_pylist(),
                    clusters.column("description").to_pylist()))
    inputs: list[dict | None] = []
    hashes: list[str] = []
    failed: dict[int, str] = {}
    for pos, row in enumerate(sel.select(["item_id", "title", "thumbnail", "frames"]).to_pylist()):
        cd = desc.get(ic.get(row["item_id"]))
        frames = [f for f in (row["frames"] or []) if f]
        if cd is None:
            failed[pos] = (f"item_clusters: no level-{level} cluster description (fix: re-run "
                           "`serendip cluster`; clusters and item_clusters must come from the "
                           "same tree)")
        elif needs_media and not row["thumbnail"] and not frames:
            failed[pos] = ("items.thumbnail: neither thumbnail nor frames, but the model's "
                           "prompt needs images (fix: add media for the item, or score with a "
                           "text-strategy model)")
        if pos in failed:
            inputs.append(None)
            hashes.append("")
            continue
        inputs.append({"title": row["title"] or "", "context_description": cd,
                       "thumbnail": row["thumbnail"] or None, "frames": frames or None})
        hashes.append(content_hash(row["title"], row["thumbnail"], frames, cd))
    return inputs, hashes, failed


def takes_candidates(predictor) -> bool:
    """Whether ``predictor.predict`` ranks a given candidate subset per input."""
    import inspect

    try:
        return "candidates" in inspect.signature(predictor.predict).parameters
    except (TypeError, ValueError):
        return False


def delta_of(workdir: str | os.PathLike, delta: int | None = None) -> int:
    """δ of the candidates: ``delta`` when given, else the work directory's curation.json,
    else 1."""
    if delta is not None:
        return int(delta)
    path = Path(workdir) / "curation.json"
    if path.exists():
        try:
            return int(json.loads(path.read_text()).get("delta", 1))
        except (ValueError, TypeError, AttributeError):
            return 1
    return 1


def _predict_rows(predictor, batch_inputs: list[dict], k: int, constrained: bool,
                  candidates: list[list[str]] | None = None) -> tuple[list, dict[int, str]]:
    """Predictions for a batch; when the batch fails on an item's input (media missing or
    unreadable), each item is retried alone so that only the bad ones fail. Returns
    (predictions, ``None`` where failed; ``{index in batch: reason}``).

    ``candidates``: per input, the only clusters it may be answered with (its serendipitous
    candidates): ranked exactly by a predictor that takes them, else filtered out of a longer
    answer list (at most ``k`` kept)."""
    ranked = candidates is not None and takes_candidates(predictor)

    def call(inputs: list[dict], cands: list[list[str]] | None) -> list:
        if cands is None:
            return predictor.predict(inputs, k=k, constrained=constrained)
        if ranked:
            return predictor.predict(inputs, k=k, constrained=constrained, candidates=cands)
        n = len(getattr(predictor, "cluster_ids", ()) or ()) or k + 1
        wide = predictor.predict(inputs, k=min(n, max(k + 1, 2 * k)), constrained=constrained)
        return [[p for p in ps if p.cluster_id in set(c)][:k] for ps, c in zip(wide, cands)]

    def none_left(preds: list, failed: dict[int, str]) -> tuple[list, dict[int, str]]:
        # a filtered answer list can come out empty: that item fails (never an empty row)
        for j, p in enumerate(preds):
            if p is not None and not p and candidates is not None:
                preds[j] = None
                failed[j] = (f"the model named none of the item's {len(candidates[j])} "
                             "serendipitous candidates among its answers (fix: score with a "
                             "model whose predict ranks candidates, or a larger k)")
        return preds, failed

    try:
        return none_left(call(batch_inputs, candidates), {})
    except ROW_ERRORS as e:
        if len(batch_inputs) == 1:
            return [None], {0: _reason(e)}
    preds, failed = [], {}
    for j, one in enumerate(batch_inputs):
        try:
            preds += call([one], [candidates[j]] if candidates is not None else None)
        except ROW_ERRORS as e:
            preds.append(None)
            failed[j] = _reason(e)
    return none_left(preds, failed)


def _reason(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:500]


def write_errors(workdir: str | os.PathLike, rows: list[dict]) -> Path:
    """``<workdir>/scoring_errors.parquet`` (atomic): this run's failed items with the stage
    (``inputs`` / ``predict``) and the one-line reason; an empty table when none failed."""
    table = pa.Table.from_pylist(rows, schema=ERRORS_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    path = Path(workdir) / ERRORS_FILE
    atomic_write_bytes(path, buf.getvalue())
    return path


def _rows(ids, hashes, preds, model_version: str, now: datetime) -> pa.Table:
    return pa.table({
        "item_id": pa.array(ids, pa.string()),
        "cluster_ids": pa.array([[p.cluster_id for p in ps if p.cluster_id] for ps in preds],
                                pa.list_(pa.string())),
        "descriptions": pa.array([[p.description for p in ps if p.cluster_id] for ps in preds],
                                 pa.list_(pa.string())),
        "scores": pa.array([[float(p.score) for p in ps if p.cluster_id] for ps in preds],
                           pa.list_(pa.float64())),
        "model_version": pa.array([model_version] * len(ids), pa.string()),
        "content_hash": pa.array(hashes, pa.string()),
        "scored_at": pa.array([now] * len(ids), SCHEMAS["item_serendipity"].field("scored_at").type),
    }, schema=SCHEMAS["item_serendipity"])


def shard_of(item_id: str, num_shards: int) -> int:
    """Stable shard of an item (same across runs and machines, unlike ``hash()``), so each
    shard's incremental state stays valid from one run to the next."""
    import zlib

    return zlib.crc32(item_id.encode()) % num_shards


def score_items(workdir: str | os.PathLike, predictor, cfg: ScoringConfig | None = None,
                embed: Callable[[pa.Table], np.ndarray] | None = None) -> ScoringResult:
    """Score the popular corpus of ``workdir`` with ``predictor`` (a ClusterPredictor) and
    write ``item_serendipity.parquet``; see the module docstring for the guarantees. Paper
    §3.2: the most popular items up to ``cfg.coverage`` of impressions (a fraction in (0, 1]),
    incrementally (unchanged items keep their scores).

    Raises:
        SerendipError: a predictor without ``model_version``, or more failed items than
            ``cfg.max_error_rate`` (every failure listed in scoring_errors.parquet).
        ConfigError: a setting out of range. SchemaError: a missing or malformed table.
    """
    cfg = cfg or ScoringConfig()
    cfg.check()
    t0 = time.perf_counter()
    wd = Path(workdir)
    version = str(getattr(predictor, "model_version", "") or "")
    if not version:
        raise SerendipError("the predictor has no model_version", field="model",
                            fix="load the model with ClusterPredictor.load or the registry")
    store = ChunkStore(wd)
    store.lock()                       # before anything is written (item_clusters included)
    try:
        return _score_locked(wd, predictor, cfg, embed, store, version, t0)
    finally:
        store.unlock()


def _score_locked(wd: Path, predictor, cfg: ScoringConfig, embed, store: ChunkStore,
                  version: str, t0: float) -> ScoringResult:
    items = read_table(wd, "items")
    if items.num_rows == 0:
        raise SerendipError("the items table is empty", field="items",
                            fix="put the catalogue in items.parquet or items.csv (README 'Data contracts')")
    clusters = read_table(wd, "clusters")
    item_clusters = read_table(wd, "item_clusters")
    n_known = item_clusters.num_rows
    missing = items.num_rows - len(set(item_clusters.column("item_id").to_pylist())
                                   & set(items.column("item_id").to_pylist()))
    if missing and cfg.assign_new:
        item_clusters = assign_new_items(wd, items, item_clusters, embed)
        write_table(wd, "item_clusters", item_clusters, refs={"items": items})
    assigned = item_clusters.num_rows - n_known

    selected, stats = select_by_coverage(items, cfg.coverage)
    if cfg.num_shards > 1:
        selected = selected.filter(pa.array(
            [shard_of(i, cfg.num_shards) == cfg.shard
             for i in selected.column("item_id").to_pylist()], pa.bool_()))
        stats.update({"shard": cfg.shard, "num_shards": cfg.num_shards,
                      "shard_items": selected.num_rows})
    level = int(predictor.level)
    inputs, hashes, bad_inputs = _inputs(selected, item_clusters, clusters, level,
                                         predictor.prompt_config.uses_images)
    # only serendipitous answers (paper §2): each item's candidate clusters at (level, δ)
    from serendip.candidates import sibling_map

    delta = delta_of(wd, cfg.delta)
    sibs = sibling_map(clusters, level, delta) if cfg.constrained else {}
    own = dict(zip(item_clusters.column("item_id").to_pylist(),
                   item_clusters.column(f"c{level}").to_pylist()))
    cands: list[list[str] | None] = []
    for j, i in enumerate(selected.column("item_id").to_pylist()):
        c = sibs.get(own.get(i)) if cfg.constrained else None
        if cfg.constrained and not c and j not in bad_inputs:
            bad_inputs[j] = (f"item_clusters: its level-{level} cluster {own.get(i)!r} has no "
                             f"serendipitous candidate (no other level-{level} cluster under "
                             f"its level-{level - delta} ancestor) (fix: cluster with more "
                             "branching, or curate and score with a larger delta)")
        cands.append(c or None)
    stats.update({"level": level, "delta": delta if cfg.constrained else None,
                  "answers_restricted_to_candidates": bool(cfg.constrained)})
    base = media_root(wd)  # relative media paths: against the data directory, never the cwd
    for x in inputs:
        if x is None:
            continue
        x["thumbnail"] = resolve_media(x["thumbnail"], base)
        x["frames"] = [resolve_media(f, base) for f in x["frames"]] if x["frames"] else None
    ids = selected.column("item_id").to_pylist()
    now = datetime.now(timezone.utc)
    errors = [{"item_id": ids[j], "stage": "inputs", "reason": r, "model_version": version,
               "failed_at": now} for j, r in bad_inputs.items()]
    allowed = cfg.max_error_rate * len(ids)      # failures beyond this fail the run

    committed, chunk_stats = store.load()
    pool: dict[str, dict] = {}
    sources = [t for t in (committed,) if t is not None]
    if has_table(wd, "item_serendipity"):
        try:
            sources.insert(0, read_table(wd, "item_serendipity"))
        except SerendipError:
            pass                                   # unreadable: everything is rescored
    for t in sources:                              # later sources (chunks) win
        for row in t.to_pylist():
            if row["model_version"] == version:
                pool[row["item_id"]] = row
    # a row is reusable when model, content and enough clusters (k may have grown) match
    need = min(cfg.k, len(getattr(predictor, "cluster_ids", ())) or cfg.k)

    def reusable(j: int, i: str, h: str) -> bool:
        row = pool.get(i)
        if j in bad_inputs or row is None or row["content_hash"] != h:
            return False
        got = list(row["cluster_ids"] or [])
        if cands[j] is not None:     # an older row naming a non-candidate is scored again
            return set(got) <= set(cands[j]) and len(got) >= min(need, len(cands[j]))
        return len(got) >= need

    reuse = {i for j, (i, h) in enumerate(zip(ids, hashes)) if reusable(j, i, h)}
    todo = [j for j, i in enumerate(ids) if i not in reuse and j not in bad_inputs]

    def check_rate() -> None:
        if len(errors) > allowed:
            path = write_errors(wd, errors)
            top = errors[-1]
            raise SerendipError(
                f"{len(errors)} of {len(ids)} selected items failed "
                f"({len(errors) / max(len(ids), 1):.1%} > max_error_rate "
                f"{cfg.max_error_rate:.1%}), e.g. {top['item_id']!r}: "
                f"{top['reason'].split(' (fix:')[0]}",
                field="items", fix=f"see {path} for every failed item and why; fix the data "
                                   "(scored chunks are kept: the next run resumes), or raise "
                                   "--max-error-rate")

    check_rate()
    predictor.batch_size = cfg.batch_size
    fresh: list[pa.Table] = []
    bar = tqdm(total=len(todo), desc="score", unit="item", disable=not cfg.progress,
               smoothing=0.1)
    for c in range(0, len(todo), cfg.chunk_size):
        chunk = todo[c:c + cfg.chunk_size]
        # padding-aware: similar prompt lengths share a batch
        chunk = sorted(chunk, key=lambda j: (len(inputs[j]["title"]),
                                             len(inputs[j]["context_description"])))
        done, preds = [], []
        for b in range(0, len(chunk), cfg.batch_size):
            batch = chunk[b:b + cfg.batch_size]
            got, failed = _predict_rows(predictor, [inputs[j] for j in batch], cfg.k,
                                        cfg.constrained,
                                        [cands[j] for j in batch] if cfg.constrained else None)
            when = datetime.now(timezone.utc)
            for n, (j, p) in enumerate(zip(batch, got)):
                if n in failed:
                    errors.append({"item_id": ids[j], "stage": "predict", "reason": failed[n],
                                   "model_version": version, "failed_at": when})
                else:
                    done.append(j)
                    preds.append(p)
            bar.update(len(batch))
            check_rate()
        if done:
            table = _rows([ids[j] for j in done], [hashes[j] for j in done], preds, version,
                          datetime.now(timezone.utc))
            store.commit(table)
            fresh.append(table)
    bar.close()

    by_id = {i: {**pool[i], **{c: pool[i][c][:cfg.k] for c in
                               ("cluster_ids", "descriptions", "scores")}} for i in reuse}
    for t in fresh:
        for row in t.to_pylist():
            by_id[row["item_id"]] = row
    out = pa.Table.from_pylist([by_id[i] for i in ids if i in by_id],
                               schema=SCHEMAS["item_serendipity"])
    errors_path = write_errors(wd, errors)
    write_table(wd, "item_serendipity", out, refs={"items": items})
    store.clear()
    elapsed = time.perf_counter() - t0
    scored = len(todo) - sum(1 for e in errors if e["stage"] == "predict")
    stats.update({"model_version": version, "reused": len(reuse), "scored": scored,
                  "failed": len(errors), "error_rate": round(len(errors) / max(len(ids), 1), 4),
                  "max_error_rate": cfg.max_error_rate, "errors_table": str(errors_path),
                  "assigned_new_items": assigned, "resumed_chunks": chunk_stats["chunks"],
                  "corrupt_chunks": chunk_stats["corrupt_chunks"], "seconds": round(elapsed, 3),
                  "items_per_s": round(len(todo) / elapsed, 2) if todo else None})
    return ScoringResult(out, stats)


# ------------------------------------------------------------------ stage (CLI / KFP)
def _same_file(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.read_bytes() == b.read_bytes()


def prepare_state(state_dir: str | os.PathLike, data_dir: str | os.PathLike,
                  tree_dir: str | os.PathLike) -> Path:
    """Lay out a scoring work directory from pipeline inputs: items from ``data_dir``; clusters,
    item_clusters and cluster_tree/ from ``tree_dir``. ``state_dir`` persists across runs (a
    volume): item_serendipity and scoring/ chunks stay there, which is what makes runs
    incremental and a retried pod resume. Items a previous run placed in the *same* tree keep
    their placement."""
    import shutil

    state, data, tree = Path(state_dir), Path(data_dir), Path(tree_dir)
    state.mkdir(parents=True, exist_ok=True)
    if state.resolve() == data.resolve() == tree.resolve():
        return state
    same_tree = _same_file(state / "cluster_tree" / "tree.json", tree / "cluster_tree" / "tree.json")
    extra = None
    if same_tree and has_table(state, "item_clusters"):
        extra = read_table(state, "item_clusters")
    src_items = find_table(data, "items")                   # parquet or CSV
    if src_items.resolve() != table_path(state, "items").resolve():
        if src_items.suffix == ".parquet" and src_items.is_file():
            shutil.copyfile(src_items, state / ".items.parquet.tmp")
            os.replace(state / ".items.parquet.tmp", table_path(state, "items"))
        else:
            write_table(state, "items", read_table(data, "items"))
        # the items' relative media paths stay relative to the data directory
        atomic_write_bytes(state / MEDIA_BASE_FILE, str(media_root(data).resolve()).encode())
    for name in ("clusters", "item_clusters"):
        src, dst = table_path(tree, name), table_path(state, name)
        if src.resolve() != dst.resolve():
            write_table(state, name, read_table(tree, name))
    if (tree / "cluster_tree").resolve() != (state / "cluster_tree").resolve():
        tmp = state / ".cluster_tree.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(tree / "cluster_tree", tmp)
        shutil.rmtree(state / "cluster_tree", ignore_errors=True)
        os.replace(tmp, state / "cluster_tree")
    for src in (tree, data):          # level and δ of the candidates (score_items)
        if (src / "curation.json").is_file() and \
                (src / "curation.json").resolve() != (state / "curation.json").resolve():
            atomic_write_bytes(state / "curation.json", (src / "curation.json").read_bytes())
            break
    if extra is not None:
        ic = read_table(state, "item_clusters")
        known = set(ic.column("item_id").to_pylist())
        keep = extra.filter(pa.array([i not in known for i in extra.column("item_id").to_pylist()]))
        if keep.num_rows:
            write_table(state, "item_clusters", pa.concat_tables([ic, keep]))
    return state


def scoring_stage(data_dir: str | os.PathLike, tree_dir: str | os.PathLike,
                  state_dir: str | os.PathLike, predictor, cfg: ScoringConfig | None = None,
                  out_dir: str | os.PathLike | None = None) -> ScoringResult:
    """Score in ``state_dir`` (see :func:`prepare_state`) and copy item_serendipity.parquet and
    item_clusters.parquet to ``out_dir`` — the KFP component's body."""
    import shutil

    state = prepare_state(state_dir, data_dir, tree_dir)
    result = score_items(state, predictor, cfg)
    if out_dir is not None and Path(out_dir).resolve() != state.resolve():
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("item_serendipity", "item_clusters", "clusters"):
            shutil.copyfile(table_path(state, name), table_path(out, name))
        if (state / ERRORS_FILE).exists():
            shutil.copyfile(state / ERRORS_FILE, out / ERRORS_FILE)
    return result


def merge_shards(part_dirs: list[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Join sharded scoring outputs: item_serendipity rows are disjoint across shards (checked),
    item_clusters rows are unioned, clusters are the same tree (the first one is kept)."""
    import shutil

    if not part_dirs:
        raise SerendipError("no scoring shards to merge", field="parts",
                            fix="run at least one score_shard task")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores = pa.concat_tables([read_table(p, "item_serendipity") for p in part_dirs])
    ids = scores.column("item_id")
    import pyarrow.compute as pc

    if pc.count_distinct(ids).as_py() != len(ids):
        raise SerendipError("shards scored overlapping items", field="parts",
                            fix="give every score_shard the same num_shards")
    ic = pa.concat_tables([read_table(p, "item_clusters") for p in part_dirs])
    ic = ic.take(np.unique(np.asarray(ic.column("item_id").to_pylist()), return_index=True)[1])
    write_table(out, "item_serendipity", scores)
    errors = [pq.read_table(Path(p) / ERRORS_FILE) for p in part_dirs
              if (Path(p) / ERRORS_FILE).exists()]
    write_errors(out, pa.concat_tables(errors).to_pylist() if errors else [])
    write_table(out, "item_clusters", ic)
    shutil.copyfile(table_path(part_dirs[0], "clusters"), table_path(out, "clusters"))
    return {"shards": len(part_dirs), "rows": scores.num_rows, "item_clusters": ic.num_rows}


def place_new_items(data_dir: str | os.PathLike, tree_dir: str | os.PathLike,
                    out_dir: str | os.PathLike) -> dict:
    """The scoring pipeline's first step: a tree directory whose item_clusters also place the
    items that arrived since the tree was built (nearest centroid per level)."""
    state = prepare_state(out_dir, data_dir, tree_dir)
    items = read_table(state, "items")
    ic = read_table(state, "item_clusters")
    placed = assign_new_items(state, items, ic)
    write_table(state, "item_clusters", placed, refs={"items": items})
    return {"items": items.num_rows, "assigned_new_items": placed.num_rows - ic.num_rows}
