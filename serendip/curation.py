"""Serendipitous pairs and the paper's diversified data curation (§2, §4.1).

A (context item v, next item n) pair from the logs is

* **similar** when v and n share their level-``l`` cluster;
* **serendipitous** when they differ at level ``l`` but share the level ``l - δ`` cluster
  (``l - δ = 0`` means the root: any other level-``l`` cluster).

Diversified curation keeps the serendipitous pairs, groups them by the next item's level-``l``
cluster C(n), aggregates satisfaction per (context item, C(n)) and keeps, for every cluster, the
``top_k`` context items with the highest mean satisfaction — so every cluster gets an equal share
of the training data. Examples are then built for one prompt strategy (:mod:`serendip.prompts`);
:func:`build_examples` can rebuild them for another strategy from the same selection.

The heavy part (joins, classification, aggregation, top-k) is one DuckDB query over Arrow tables.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serendip.data.schemas import SCHEMAS
from serendip.errors import ConfigError, SchemaError
from serendip.prompts import PromptConfig, build_prompt, select_images

LEVELS = 4
SELECTED_SCHEMA = pa.schema([
    ("context_item_id", pa.string()),
    ("target_cluster_id", pa.string()),
    ("satisfaction", pa.float64()),
    ("n_interactions", pa.int64()),
    ("split", pa.string()),
])


@dataclass
class CurationConfig:
    """Which pairs count as serendipitous and how many examples each cluster gets."""

    level: int = 3                  # l: the level at which context and next item must differ
    delta: int = 1                  # δ: they must share the cluster at level l - δ
    top_k: int = 10                 # context items kept per next-item cluster (paper: 10)
    min_interactions: int = 1       # a (context item, cluster) needs this many logged pairs
    test_fraction: float = 0.2      # held-out share of context items
    seed: int = 0
    drop_unknown_items: bool = False   # interactions whose items are not in the tree
    threads: int = 0                # DuckDB threads (0 = DuckDB's default)
    prompt: PromptConfig = field(default_factory=PromptConfig)

    def check(self) -> None:
        if not 1 <= self.level <= LEVELS:
            raise ConfigError(f"level={self.level}", field="level", fix=f"use 1..{LEVELS}")
        if not 1 <= self.delta <= self.level:
            raise ConfigError(f"delta={self.delta} with level={self.level}", field="delta",
                              fix=f"use 1 <= delta <= level (here <= {self.level})")
        if self.top_k < 1:
            raise ConfigError(f"top_k={self.top_k}", field="top_k", fix="use top_k >= 1")
        if self.min_interactions < 1:
            raise ConfigError(f"min_interactions={self.min_interactions}",
                              field="min_interactions", fix="use min_interactions >= 1")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction={self.test_fraction}", field="test_fraction",
                              fix="use a fraction in [0, 1)")
        self.prompt.check()


@dataclass
class CurationResult:
    selected: pa.Table              # SELECTED_SCHEMA
    examples: pa.Table              # schema "examples"
    stats: dict
    candidate_cluster_ids: list[str]
    candidates: list[str]           # descriptions of all level-l clusters (controlled generation)


def _connect(threads: int = 0):
    import duckdb

    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads TO {int(threads)}")
    return con


def _check_known(con, drop: bool) -> int:
    """Interactions whose items are not in item_clusters: an error unless ``drop``."""
    n_missing, example = con.execute("""
        SELECT count(*),
               min(CASE WHEN c.item_id IS NULL THEN i.context_item_id ELSE i.next_item_id END)
        FROM inter i
        LEFT JOIN ic c ON i.context_item_id = c.item_id
        LEFT JOIN ic n ON i.next_item_id = n.item_id
        WHERE c.item_id IS NULL OR n.item_id IS NULL""").fetchone()
    if n_missing and not drop:
        raise SchemaError("interactions", "context_item_id/next_item_id",
                          f"{n_missing} interaction(s) reference items without clusters "
                          f"(e.g. {example!r})",
                          "cluster the same items (or assign new items to the tree), or set "
                          "drop_unknown_items=true")
    return int(n_missing)


def _register(con, interactions: pa.Table, item_clusters: pa.Table) -> None:
    con.register("inter", interactions.select(
        ["user_id", "context_item_id", "next_item_id", "satisfaction"]))
    con.register("ic", item_clusters.select(["item_id", "c1", "c2", "c3", "c4"]))


def _pair_condition(level: int, delta: int) -> tuple[str, str]:
    """SQL for (similar, serendipitous) over aliases c (context) and n (next)."""
    similar = f"c.c{level} = n.c{level}"
    anc = level - delta
    serendip = f"c.c{level} <> n.c{level}" + (f" AND c.c{anc} = n.c{anc}" if anc >= 1 else "")
    return similar, serendip


def serendipitous_pairs(interactions: pa.Table, item_clusters: pa.Table, level: int = 3,
                        delta: int = 1, drop_unknown_items: bool = False) -> pa.Table:
    """The logged (context, next) pairs that are serendipitous at (``level``, ``delta``), with
    both items' level-``level`` cluster ids (context_cluster_id, next_cluster_id)."""
    CurationConfig(level=level, delta=delta).check()
    con = _connect()
    _register(con, interactions, item_clusters)
    _check_known(con, drop_unknown_items)
    _, serendip = _pair_condition(level, delta)
    return con.execute(f"""
        SELECT i.user_id, i.context_item_id, i.next_item_id, i.satisfaction,
               c.c{level} AS context_cluster_id, n.c{level} AS next_cluster_id
        FROM inter i JOIN ic c ON i.context_item_id = c.item_id
                     JOIN ic n ON i.next_item_id = n.item_id
        WHERE {serendip}""").to_arrow_table()


def pair_stats(con, level: int, delta: int) -> dict:
    """Counts and mean satisfaction of similar, serendipitous and other pairs."""
    similar, serendip = _pair_condition(level, delta)
    rows = con.execute(f"""
        SELECT CASE WHEN {similar} THEN 'similar' WHEN {serendip} THEN 'serendipitous'
                    ELSE 'other' END AS kind,
               count(*) AS pairs, avg(i.satisfaction) AS mean_satisfaction
        FROM inter i JOIN ic c ON i.context_item_id = c.item_id
                     JOIN ic n ON i.next_item_id = n.item_id
        GROUP BY kind""").fetchall()
    out = {k: {"pairs": 0, "mean_satisfaction": None}
           for k in ("similar", "serendipitous", "other")}
    for kind, pairs, mean in rows:
        out[kind] = {"pairs": int(pairs),
                     "mean_satisfaction": None if mean is None else round(float(mean), 4)}
    return out


def select_diversified(con, cfg: CurationConfig) -> pa.Table:
    """Top-k context items per next-item cluster by mean satisfaction (ties: more pairs, id)."""
    _, serendip = _pair_condition(cfg.level, cfg.delta)
    lvl = cfg.level
    return con.execute(f"""
        WITH pairs AS (
            SELECT i.context_item_id, n.c{lvl} AS target_cluster_id, i.satisfaction
            FROM inter i JOIN ic c ON i.context_item_id = c.item_id
                         JOIN ic n ON i.next_item_id = n.item_id
            WHERE {serendip}),
        agg AS (
            SELECT context_item_id, target_cluster_id, avg(satisfaction) AS satisfaction,
                   count(*) AS n_interactions
            FROM pairs GROUP BY context_item_id, target_cluster_id
            HAVING count(*) >= {int(cfg.min_interactions)})
        SELECT context_item_id, target_cluster_id, satisfaction, n_interactions
        FROM agg
        QUALIFY row_number() OVER (PARTITION BY target_cluster_id
                                   ORDER BY satisfaction DESC, n_interactions DESC,
                                            context_item_id) <= {int(cfg.top_k)}
        ORDER BY target_cluster_id, satisfaction DESC, n_interactions DESC, context_item_id
        """).to_arrow_table()


def split_by_context(context_ids: list[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Deterministic train/test split by context item (hash of seed and id)."""
    uniq = sorted(set(context_ids))
    if not uniq:
        return {}
    u = np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{c}".encode(), digest_size=8)
                                 .digest(), "big") / 2**64 for c in uniq])
    test = u < test_fraction
    if test_fraction > 0 and len(uniq) >= 2:
        if not test.any():
            test[int(np.argmin(u))] = True
        if test.all():
            test[int(np.argmax(u))] = False
    return {c: ("test" if t else "train") for c, t in zip(uniq, test)}


def build_examples(selected: pa.Table, items: pa.Table, clusters: pa.Table,
                   item_clusters: pa.Table, prompt_cfg: PromptConfig, level: int) -> pa.Table:
    """Training examples (schema "examples") for one prompt strategy from a selection.

    The prompt shows the context item (title and its own level-``level`` cluster description
    for text strategies, frames or the thumbnail for visual ones); the target is the
    serendipitous cluster's description; for chain-of-thought the reasoning is the context
    item's own cluster description ("the video is about ...").
    """
    prompt_cfg.check()
    desc = dict(zip(clusters.column("cluster_id").to_pylist(),
                    clusters.column("description").to_pylist()))
    own = dict(zip(item_clusters.column("item_id").to_pylist(),
                   item_clusters.column(f"c{level}").to_pylist()))
    cols = ["item_id", "title"] + [c for c in ("thumbnail", "frames") if c in items.column_names]
    ids = items.column("item_id").to_pylist()
    index = {item_id: i for i, item_id in enumerate(ids)}
    titles = items.column("title").to_pylist()
    thumbs = items.column("thumbnail").to_pylist() if "thumbnail" in cols else [None] * len(ids)
    frames = items.column("frames").to_pylist() if "frames" in cols else [None] * len(ids)
    out: dict[str, list] = {name: [] for name in SCHEMAS["examples"].names}
    sel = selected.to_pydict()
    for ctx, target, sat, split in zip(sel["context_item_id"], sel["target_cluster_id"],
                                       sel["satisfaction"], sel["split"]):
        i = index.get(ctx)
        if i is None:
            raise SchemaError("items", "item_id", f"context item {ctx!r} is not in items",
                              "curate with the items table the interactions refer to")
        context_desc = desc[own[ctx]]
        images = select_images(prompt_cfg, thumbs[i], frames[i])
        if any(not isinstance(m, str) for m in images):
            raise SchemaError("items", "thumbnail/frames", "examples need media references "
                              "(paths or URIs), got raw bytes",
                              "store media as files and put their paths in the items table")
        out["context_item_id"].append(ctx)
        out["target_cluster_id"].append(target)
        out["target_description"].append(desc[target])
        out["satisfaction"].append(float(sat))
        out["strategy"].append(prompt_cfg.strategy)
        out["prompt"].append(build_prompt(prompt_cfg, titles[i] or "", context_desc))
        out["images"].append(images)
        out["reasoning"].append(context_desc if prompt_cfg.strategy == "cot" else None)
        out["split"].append(split)
    return pa.table(out, schema=SCHEMAS["examples"])


def curate(items: pa.Table, interactions: pa.Table, clusters: pa.Table,
           item_clusters: pa.Table, cfg: CurationConfig | None = None) -> CurationResult:
    """Serendipitous pairs → diversified top-k selection → held-out split → examples."""
    cfg = cfg or CurationConfig()
    cfg.check()
    if interactions.num_rows == 0:
        raise ConfigError("no interactions to curate from", field="interactions",
                          fix="pass a non-empty interactions table")
    con = _connect(cfg.threads)
    _register(con, interactions, item_clusters)
    dropped = _check_known(con, cfg.drop_unknown_items)
    kinds = pair_stats(con, cfg.level, cfg.delta)
    if kinds["serendipitous"]["pairs"] == 0:
        raise ConfigError(f"no serendipitous pairs at level={cfg.level}, delta={cfg.delta} "
                          f"({kinds['similar']['pairs']} similar, {kinds['other']['pairs']} other)",
                          field="level/delta",
                          fix="use a larger --delta (a broader shared ancestor) or another "
                              "--level; check that the tree has several clusters per parent")
    agg = select_diversified(con, cfg)
    if agg.num_rows == 0:
        raise ConfigError(f"no (context item, cluster) pair has >= {cfg.min_interactions} "
                          "serendipitous interactions", field="min_interactions",
                          fix="lower min_interactions")
    split = split_by_context(agg.column("context_item_id").to_pylist(), cfg.test_fraction,
                             cfg.seed)
    selected = agg.append_column("split", pa.array(
        [split[c] for c in agg.column("context_item_id").to_pylist()], pa.string()))
    selected = selected.cast(SELECTED_SCHEMA)
    examples = build_examples(selected, items, clusters, item_clusters, cfg.prompt, cfg.level)
    level_rows = clusters.filter(pc.equal(clusters.column("level"), cfg.level))
    cand_ids = level_rows.column("cluster_id").to_pylist()
    per_cluster = pc.value_counts(selected.column("target_cluster_id")).field("counts")
    n_split = {s: int(pc.sum(pc.equal(selected.column("split"), s)).as_py() or 0)
               for s in ("train", "test")}
    stats = {
        "interactions": interactions.num_rows,
        "dropped_unknown_interactions": dropped,
        "pairs": kinds,
        "serendipitous_minus_similar_satisfaction": (
            None if kinds["similar"]["mean_satisfaction"] is None else
            round(kinds["serendipitous"]["mean_satisfaction"]
                  - kinds["similar"]["mean_satisfaction"], 4)),
        "selected_pairs": selected.num_rows,
        "context_items": len(split),
        "clusters_at_level": len(cand_ids),
        "clusters_with_examples": len(per_cluster),
        "examples_per_cluster_min": int(pc.min(per_cluster).as_py()),
        "examples_per_cluster_max": int(pc.max(per_cluster).as_py()),
        "selected_mean_satisfaction": round(float(pc.mean(selected.column("satisfaction"))
                                                  .as_py()), 4),
        "train_examples": n_split["train"],
        "test_examples": n_split["test"],
    }
    return CurationResult(selected=selected, examples=examples, stats=stats,
                          candidate_cluster_ids=cand_ids,
                          candidates=level_rows.column("description").to_pylist())


def curation_json(result: CurationResult, cfg: CurationConfig) -> dict:
    """The ``curation.json`` document (INTERFACES.md)."""
    from serendip.config import to_dict

    return {"level": cfg.level, "delta": cfg.delta, "top_k": cfg.top_k,
            "strategy": cfg.prompt.strategy, "n_frames": cfg.prompt.n_frames,
            "use_thumbnail": cfg.prompt.use_thumbnail, "config": to_dict(cfg),
            "stats": result.stats, "candidate_cluster_ids": result.candidate_cluster_ids,
            "candidates": result.candidates}


# ------------------------------------------------------------------ stage entry (CLI, KFP)
def curation_config(settings: dict | None = None) -> CurationConfig:
    """CurationConfig from one mapping; prompt fields under ``prompt:`` or ``prompt.<field>``."""
    from serendip.config import from_dict

    data = dict(settings or {})
    prompt = dict(data.pop("prompt", None) or {})
    for key in [k for k in data if k.startswith("prompt.")]:
        prompt[key.split(".", 1)[1]] = data.pop(key)
    data["prompt"] = prompt
    cfg = from_dict(CurationConfig, data)
    cfg.check()
    return cfg


def curate_stage(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 cfg: CurationConfig | None = None,
                 clusters_dir: str | os.PathLike | None = None) -> CurationResult:
    """Read items + interactions from ``data_dir`` and clusters + item_clusters from
    ``clusters_dir`` (default: ``data_dir``); write examples.parquet, curated_pairs.parquet and
    curation.json to ``out_dir`` (default: ``data_dir``)."""
    import json

    from serendip.data.io import atomic_write_bytes, atomic_write_parquet, read_table, write_table

    cfg = cfg or CurationConfig()
    out = Path(out_dir or data_dir)
    out.mkdir(parents=True, exist_ok=True)
    cdir = clusters_dir or data_dir
    items = read_table(data_dir, "items")
    interactions = read_table(data_dir, "interactions", refs={"items": items})
    clusters = read_table(cdir, "clusters")
    item_clusters = read_table(cdir, "item_clusters", refs={"items": items})
    result = curate(items, interactions, clusters, item_clusters, cfg)
    write_table(out, "examples", result.examples, refs={"items": items, "clusters": clusters})
    atomic_write_parquet(result.selected, out / "curated_pairs.parquet")
    atomic_write_bytes(out / "curation.json",
                       json.dumps(curation_json(result, cfg), indent=2).encode())
    return result
