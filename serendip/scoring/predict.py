"""Ask the predictor for each item's serendipitous clusters (only its candidates), batch by batch,
retrying a failing batch item by item."""

from __future__ import annotations

import os
from datetime import datetime

import pyarrow as pa

from serendip.data.schemas import SCHEMAS
from serendip.scoring.failures import ROW_ERRORS, failure_reason


def takes_candidates(predictor) -> bool:
    """Whether ``predictor.predict`` ranks a given candidate subset per input."""
    import inspect

    try:
        return "candidates" in inspect.signature(predictor.predict).parameters
    except (TypeError, ValueError):
        return False


def delta_of(workdir: str | os.PathLike, delta: int | None = None) -> int:
    """δ of the candidates: ``delta`` when given, else the work directory's curation.json
    (read strictly), else — a bare cluster tree that was never curated —
    :class:`~serendip.curation.CurationConfig`'s own δ (1).

    Raises:
        ConfigError: a curation.json without δ or otherwise malformed
            (:func:`serendip.curation.read_curation`)."""
    from serendip.curation import CurationConfig, read_curation

    if delta is not None:
        return int(delta)
    cur = read_curation(workdir, missing_ok=True)
    return cur.delta if cur is not None else CurationConfig().delta


def predict_rows(predictor, batch_inputs: list[dict], k: int, constrained: bool,
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
            return [None], {0: failure_reason(e)}
    preds, failed = [], {}
    for j, one in enumerate(batch_inputs):
        try:
            preds += call([one], [candidates[j]] if candidates is not None else None)
        except ROW_ERRORS as e:
            preds.append(None)
            failed[j] = failure_reason(e)
    return none_left(preds, failed)



def result_rows(ids, hashes, preds, model_version: str, now: datetime) -> pa.Table:
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
