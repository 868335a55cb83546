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

The heavy part is vectorised: item ids are resolved to row indices once (Arrow's hash join),
after which classification, aggregation and top-k are integer gathers and one sort in numpy —
10M interactions in seconds (``benchmarks/bench_curation.py`` compares with plain pandas).

Modules: :mod:`~serendip.curation.config` (:class:`CurationConfig`, :class:`CurationResult`),
:mod:`~serendip.curation.pairs` (:func:`serendipitous_pairs`, pair statistics),
:mod:`~serendip.curation.aggregate` (satisfaction per (context, cluster), top-k, the held-out
split), :mod:`~serendip.curation.examples` (prompt choice and training examples),
:mod:`~serendip.curation.manifest` (``curation.json``: :class:`CurationManifest`,
:func:`write_curation`, :func:`read_curation`) and :mod:`~serendip.curation.stage`
(:func:`curate`, :func:`curate_stage`).
"""

from serendip.curation.aggregate import SELECTED_SCHEMA, select_diversified, split_by_context
from serendip.curation.config import LEVELS, CurationConfig, CurationResult
from serendip.curation.examples import build_examples, choose_prompt, media_counts
from serendip.curation.manifest import (
    CURATION_FILE,
    CurationManifest,
    read_curation,
    write_curation,
)
from serendip.curation.pairs import pair_stats, premise_grid, serendipitous_pairs
from serendip.curation.stage import curate, curate_stage

__all__ = [
    "CURATION_FILE", "LEVELS", "SELECTED_SCHEMA", "CurationConfig", "CurationManifest",
    "CurationResult", "build_examples", "choose_prompt", "curate", "curate_stage",
    "media_counts", "pair_stats", "premise_grid", "read_curation", "select_diversified",
    "serendipitous_pairs", "split_by_context", "write_curation",
]
