"""The scoring loop: select, reuse unchanged rows, predict the rest chunk by chunk, commit."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from serendip.data.io import has_table, read_table, write_table
from serendip.data.media import media_root, resolve_media
from serendip.data.schemas import SCHEMAS
from serendip.errors import SerendipError
from serendip.scoring.chunks import ChunkStore
from serendip.scoring.config import ScoringConfig
from serendip.scoring.coverage import select_by_coverage, shard_of
from serendip.scoring.failures import write_errors
from serendip.scoring.inputs import predictor_inputs
from serendip.scoring.predict import delta_of, predict_rows, result_rows
from serendip.tree.placement import add_new_items


@dataclass
class ScoringResult:
    table: pa.Table
    stats: dict = field(default_factory=dict)



def score_items(workdir: str | os.PathLike, predictor, cfg: ScoringConfig | None = None,
                embed: Callable[[pa.Table], np.ndarray] | None = None, *,
                progress: bool = True) -> ScoringResult:
    """Score the popular corpus of ``workdir`` with ``predictor`` (a ClusterPredictor) and
    write ``item_serendipity.parquet``; see the module docstring for the guarantees. Paper
    §3.2: the most popular items up to ``cfg.coverage`` of impressions (a fraction in (0, 1]),
    incrementally (unchanged items keep their scores). Items missing from item_clusters are
    placed in the saved tree first (``cfg.assign_new``; :func:`serendip.tree.add_new_items`,
    with ``embed(items) -> (n × d)`` instead of the saved embedder when given). ``progress``:
    a progress bar (a run-time flag, not a setting).

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
        return _score_locked(wd, predictor, cfg, embed, store, version, t0, progress)
    finally:
        store.unlock()


def _score_locked(wd: Path, predictor, cfg: ScoringConfig, embed, store: ChunkStore,
                  version: str, t0: float, progress: bool = True) -> ScoringResult:
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
        item_clusters = add_new_items(wd, items, item_clusters, media_root(wd), embed=embed)
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
    inputs, hashes, bad_inputs = predictor_inputs(selected, item_clusters, clusters, level,
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
    bar = tqdm(total=len(todo), desc="score", unit="item", disable=not progress,
               smoothing=0.1)
    for c in range(0, len(todo), cfg.chunk_size):
        chunk = todo[c:c + cfg.chunk_size]
        # padding-aware: similar prompt lengths share a batch
        chunk = sorted(chunk, key=lambda j: (len(inputs[j]["title"]),
                                             len(inputs[j]["context_description"])))
        done, preds = [], []
        for b in range(0, len(chunk), cfg.batch_size):
            batch = chunk[b:b + cfg.batch_size]
            got, failed = predict_rows(predictor, [inputs[j] for j in batch], cfg.k,
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
            table = result_rows([ids[j] for j in done], [hashes[j] for j in done], preds, version,
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
