"""Batch scoring (paper §3.2): the MLLM's serendipitous clusters for the popular corpus.

* **Coverage** — the most popular items until ``coverage`` of all impressions (default 0.8, the
  paper's figure) is reached; the long tail is left to on-demand inference at serving.
* **New items** — items missing from ``item_clusters`` are first placed in the existing tree
  (:func:`serendip.tree.add_new_items`: embedded with the embedder saved beside the tree, then
  nearest centroid per level), since the prompt carries the item's own cluster.
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

Modules: :mod:`~serendip.scoring.config`, :mod:`~serendip.scoring.coverage`,
:mod:`~serendip.scoring.inputs` (prompt inputs, content hash), :mod:`~serendip.scoring.chunks`
(the chunk store), :mod:`~serendip.scoring.predict`, :mod:`~serendip.scoring.failures`,
:mod:`~serendip.scoring.loop` (:func:`score_items`), :mod:`~serendip.scoring.state` (the KFP
state directory, shards, new-item placement step).
"""

from serendip.scoring.chunks import MANIFEST, SCORING_DIR, ChunkStore
from serendip.scoring.config import ScoringConfig
from serendip.scoring.coverage import select_by_coverage, shard_of
from serendip.scoring.failures import ERRORS_FILE, ERRORS_SCHEMA, ROW_ERRORS, write_errors
from serendip.scoring.inputs import content_hash
from serendip.scoring.loop import ScoringResult, score_items
from serendip.scoring.predict import delta_of, takes_candidates
from serendip.scoring.state import merge_shards, place_new_items, prepare_state, scoring_stage

__all__ = [
    "ERRORS_FILE", "ERRORS_SCHEMA", "MANIFEST", "ROW_ERRORS", "SCORING_DIR", "ChunkStore",
    "ScoringConfig", "ScoringResult", "content_hash", "delta_of", "merge_shards",
    "place_new_items", "prepare_state", "score_items", "scoring_stage", "select_by_coverage",
    "shard_of", "takes_candidates", "write_errors",
]
