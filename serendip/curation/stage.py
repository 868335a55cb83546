"""Curation end to end: :func:`curate` (pairs → diversified top-k → split → examples, paper §2)
and its stage entry on a work directory, :func:`curate_stage` (CLI, KFP, demo)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serendip.candidates import CandidateIndex
from serendip.curation.aggregate import (
    SELECTED_SCHEMA,
    select_diversified,
    split_by_context,
    split_logged_transitions,
)
from serendip.curation.config import CurationConfig, CurationResult
from serendip.curation.examples import build_examples, choose_prompt
from serendip.curation.manifest import CurationManifest, write_curation
from serendip.curation.pairs import _Coded, pair_stats, premise_grid
from serendip.errors import ConfigError, SchemaError
from serendip.transitions import TransitionPrior, write_prior


def _check_targets_are_candidates(selected: pa.Table, index: CandidateIndex) -> None:
    """Every training target must be one of its context's candidate clusters
    (:mod:`serendip.candidates`); building the index (the caller's) also refuses
    item_clusters whose path contradicts the clusters table, which would make pairs
    "serendipitous" that are not."""
    ok = index.is_candidate(selected.column("context_item_id").to_pylist(),
                            selected.column("target_cluster_id").to_pylist())
    if not ok.all():   # pragma: no cover - guarded by the index's consistency check
        bad = int(np.argmin(ok))
        raise SchemaError("clusters", "parent_id",
                          f"target {selected.column('target_cluster_id')[bad].as_py()!r} is not "
                          "a candidate of its context item", "rebuild the tree with "
                          "`serendip cluster` and curate again")



def curate(items: pa.Table, interactions: pa.Table, clusters: pa.Table,
           item_clusters: pa.Table, cfg: CurationConfig | None = None) -> CurationResult:
    """Serendipitous pairs → diversified top-k selection → held-out split → examples (paper §2,
    "Serendipitous User Experience" and "MLLM Fine-Tuning": keep a logged (context, next) pair
    only when the two items differ at level l but share the cluster at level l - δ).

    Args:
        items: item_id, title, media columns. interactions: user_id, context_item_id,
            next_item_id, satisfaction in [0, 1]. clusters / item_clusters: the cluster tree.

    Returns:
        CurationResult: ``examples`` (one row per selected pair, split train/test by context
        item), ``selected`` pairs and ``stats``.

    Raises:
        ConfigError: a setting out of range (``level``, ``delta``, ``top_k``, ...), no
            interactions, or no serendipitous pair at (level, δ) (the fix names a smaller δ).
        SchemaError: interactions naming items that are not in the tree (unless
            ``cfg.drop_unknown_items``).
    """
    cfg = cfg or CurationConfig()
    cfg.check()
    if interactions.num_rows == 0:
        raise ConfigError("no interactions to curate from", field="interactions",
                          fix="pass a non-empty interactions table")
    coded = _Coded(interactions, item_clusters, cfg.drop_unknown_items)
    dropped = coded.n_missing
    kinds = pair_stats(coded, cfg.level, cfg.delta)
    if kinds["serendipitous"]["pairs"] == 0:
        raise ConfigError(f"no serendipitous pairs at level={cfg.level}, delta={cfg.delta} "
                          f"({kinds['similar']['pairs']} similar, {kinds['other']['pairs']} other)",
                          field="level/delta",
                          fix="use a larger --delta (a broader shared ancestor) or another "
                              "--level; check that the tree has several clusters per parent")
    agg = select_diversified(coded, cfg)
    index = CandidateIndex.build(item_clusters, clusters, cfg.level, cfg.delta)
    _check_targets_are_candidates(agg, index)
    if agg.num_rows == 0:
        raise ConfigError(f"no (context item, cluster) pair has >= {cfg.min_interactions} "
                          "serendipitous interactions", field="min_interactions",
                          fix="lower min_interactions")
    split = split_by_context(agg.column("context_item_id").to_pylist(), cfg.test_fraction,
                             cfg.seed)
    selected = agg.append_column("split", pa.array(
        [split[c] for c in agg.column("context_item_id").to_pylist()], pa.string()))
    selected = selected.cast(SELECTED_SCHEMA)
    prompt, media = choose_prompt(cfg, items, selected.column("context_item_id").to_pylist())
    examples = build_examples(selected, items, clusters, item_clusters, prompt, cfg.level)
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
        "premise_by_level_delta": premise_grid(coded),
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
        "prompt": media,
    }
    return CurationResult(selected=selected, examples=examples, stats=stats,
                          candidate_cluster_ids=cand_ids,
                          candidates=level_rows.column("description").to_pylist(), prompt=prompt,
                          prior=training_prior(interactions, clusters, item_clusters, cfg,
                                               index))


def training_prior(interactions: pa.Table, clusters: pa.Table, item_clusters: pa.Table,
                   cfg: CurationConfig, index: CandidateIndex | None = None
                   ) -> TransitionPrior:
    """The transition prior (:mod:`serendip.transitions`) of the **training** context items:
    every logged context item is split by the same hash as the examples
    (:func:`split_logged_transitions`, ``cfg.test_fraction``, ``cfg.seed``), so no held-out
    context's transition informs it — the same training logs the baselines are computed on
    (:func:`serendip.evaluation.baselines.split_transitions`)."""
    train, _, _ = split_logged_transitions(interactions, cfg.test_fraction, cfg.seed)
    if index is None:
        index = CandidateIndex.build(item_clusters, clusters, cfg.level, cfg.delta)
    return TransitionPrior.fit(train, index)



def curate_stage(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 cfg: CurationConfig | None = None, *,
                 clusters_dir: str | os.PathLike | None = None) -> CurationResult:
    """Read items + interactions from ``data_dir`` and clusters + item_clusters from
    ``clusters_dir`` (default: ``data_dir`` if it has them, else ``out_dir``); write
    examples.parquet, curated_pairs.parquet and curation.json to ``out_dir`` (default:
    ``data_dir``): :func:`curate` on a work directory (paper §2).

    Raises:
        SchemaError: a missing or malformed table. ConfigError: as :func:`curate`.
    """
    from serendip.data.io import atomic_write_parquet, has_table, read_table, write_table

    cfg = cfg or CurationConfig()
    out = Path(out_dir or data_dir)
    out.mkdir(parents=True, exist_ok=True)
    if clusters_dir is None:   # `cluster --data raw --out work` then `curate --data raw --out work`
        clusters_dir = data_dir if has_table(data_dir, "clusters") else out
    cdir = clusters_dir
    items = read_table(data_dir, "items")
    interactions = read_table(data_dir, "interactions", refs={"items": items})
    clusters = read_table(cdir, "clusters")
    item_clusters = read_table(cdir, "item_clusters", refs={"items": items, "clusters": clusters})
    result = curate(items, interactions, clusters, item_clusters, cfg)
    write_table(out, "examples", result.examples, refs={"items": items, "clusters": clusters})
    atomic_write_parquet(result.selected, out / "curated_pairs.parquet")
    write_curation(out, CurationManifest.from_result(result, cfg))
    write_prior(out, result.prior)
    return result
