"""Replay evaluation on real logs (issue 15; paper §4): no ground truth needed.

Hold out each user's **last transition** (or every transition of the last ``holdout_days``
days), train every model on the rest, then replay each held-out context (the user, their
history up to the context item, the context item) through every arm and score the top-``k``
list against the next item the user actually chose.

Flow (``serendip evaluate --replay``):

1. ``--write-split DIR`` writes ``items`` and the **training** interactions to ``DIR``
   (:func:`write_replay_split`); run ``cluster``, ``curate``, ``finetune``, ``score`` and
   ``train-retriever`` on ``DIR`` as usual.
2. ``--workdir DIR --data RAW`` replays the held-out transitions of ``RAW`` through the models
   in ``DIR`` (:func:`replay_stage`). Held-out transitions found in ``DIR``'s interactions are
   counted and reported as ``heldout_in_training`` (a leak: then the figures flatter every
   model trained on them).

One module per concept: :mod:`.config` (:class:`ReplayConfig`), :mod:`.split` (hold-out split,
cases, leak check), :mod:`.arms` (the arms' top-k lists), :mod:`.metrics` (per-case metrics,
bootstrap intervals, the summary), :mod:`.report` (markdown), :mod:`.stage` (the stage on a work
directory). The public names are re-exported here.
"""

from serendip.evaluation.replay.arms import (
    COMPONENTS,
    PRODUCTION,
    ContentNeighbours,
    SiblingBandit,
    build_arms,
    retrieve_lists,
)
from serendip.evaluation.replay.config import ReplayConfig
from serendip.evaluation.replay.metrics import METRICS, ReplayResult, run_replay, summarise
from serendip.evaluation.replay.report import replay_markdown
from serendip.evaluation.replay.split import (
    ReplayCase,
    heldout_leak,
    holdout_mask,
    replay_cases,
    split_interactions,
    write_replay_split,
)
from serendip.evaluation.replay.stage import replay_stage

__all__ = [
    "COMPONENTS", "METRICS", "PRODUCTION", "ContentNeighbours", "ReplayCase", "ReplayConfig",
    "ReplayResult", "SiblingBandit", "build_arms", "heldout_leak", "holdout_mask",
    "replay_cases", "replay_markdown", "replay_stage",
    "retrieve_lists", "run_replay", "split_interactions", "summarise", "write_replay_split",
]
