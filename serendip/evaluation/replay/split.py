"""The replay's hold-out split (each user's last transition, or every transition of the last
``holdout_days`` days), its held-out cases, the training split written for the models, and the
leak check (held-out transitions the models were trained on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serendip.errors import SerendipError
from serendip.evaluation.replay.config import ReplayConfig


def holdout_mask(interactions: pa.Table, cfg: ReplayConfig) -> np.ndarray:
    """bool [rows]: the held-out transitions. Last transition: per user the row with the
    latest ``ts`` (ties: the later row), only for users with at least two transitions (so
    something remains to train on). Last N days: every row with ts > max(ts) − N days.

    Raises:
        SerendipError: nothing would be held out, or nothing would remain for training.
    """
    n = interactions.num_rows
    ts = interactions.column("ts").cast(pa.int64()).to_numpy() if n else np.zeros(0, np.int64)
    unit = interactions.schema.field("ts").type
    per_s = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}.get(
        getattr(unit, "unit", "s"), 1)
    if cfg.holdout_days is not None:
        mask = ts > ts.max() - cfg.holdout_days * 86400 * per_s if n else np.zeros(0, bool)
    else:
        users = interactions.column("user_id").to_numpy(zero_copy_only=False)
        order = np.lexsort((np.arange(n), ts, users))
        u = users[order]
        last = np.r_[u[1:] != u[:-1], True] if n else np.zeros(0, bool)
        first = np.r_[True, u[1:] != u[:-1]] if n else np.zeros(0, bool)
        mask = np.zeros(n, bool)
        mask[order[last & ~first]] = True
    if not mask.any():
        raise SerendipError("the replay split holds out no transition", field="holdout_days",
                            fix="use more days, or logs where users have two or more "
                                "transitions")
    if mask.all():
        raise SerendipError("the replay split leaves no transition to train on",
                            field="holdout_days", fix="hold out fewer days")
    return mask


def split_interactions(interactions: pa.Table, cfg: ReplayConfig) -> tuple[pa.Table, pa.Table]:
    """(training transitions, held-out transitions)."""
    mask = holdout_mask(interactions, cfg)
    m = pa.array(mask)
    return interactions.filter(pc.invert(m)), interactions.filter(m)


@dataclass
class ReplayCase:
    user_id: str
    history: list[str]         # the user's items before the context item, then the context
    context: str
    target: str                # the next item the user chose
    satisfaction: float


def replay_cases(interactions: pa.Table, mask: np.ndarray) -> list[ReplayCase]:
    """One case per held-out transition; the history is every item of the user's sequence
    (training and earlier held-out rows, in ts order) up to and including the context."""
    df = interactions.select(["user_id", "context_item_id", "next_item_id", "satisfaction",
                              "ts"]).to_pandas()
    df["held"] = mask
    df["row"] = np.arange(len(df))
    df = df.sort_values(["user_id", "ts", "row"], kind="stable")
    cases = []
    seq: list[str] = []
    prev_user = None
    for u, c, n, s, h in zip(df.user_id, df.context_item_id, df.next_item_id, df.satisfaction,
                             df.held):
        if u != prev_user:
            seq, prev_user = [], u
        if not seq or seq[-1] != c:
            seq.append(c)
        if h:
            cases.append(ReplayCase(str(u), list(seq), c, n, float(s)))
        seq.append(n)
    return cases


def write_replay_split(data_dir: str | Path, out_dir: str | Path, cfg: ReplayConfig) -> dict:
    """Write ``items`` and the training interactions to ``out_dir`` (step 1 of the flow)."""
    from serendip.data.io import read_table, write_table

    items = read_table(data_dir, "items")
    inter = read_table(data_dir, "interactions", refs={"items": items})
    train, held = split_interactions(inter, cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_table(out, "items", items)
    write_table(out, "interactions", train, refs={"items": items})
    return {"out": str(out), "train_transitions": train.num_rows,
            "heldout_transitions": held.num_rows,
            "holdout": "last transition per user" if cfg.holdout_days is None
            else f"last {cfg.holdout_days} days"}


def heldout_leak(workdir_interactions: pa.Table | None, heldout: pa.Table) -> int:
    """How many held-out transitions appear in the interactions the models were trained on
    (same user, items and time: the same transition repeated at another time is not a leak)."""
    if workdir_interactions is None or heldout.num_rows == 0:
        return 0
    cols = ["user_id", "context_item_id", "next_item_id", "ts"]

    def keys(t: pa.Table) -> set[tuple]:
        d = t.select(cols).to_pydict()
        return set(zip(*(d[c] for c in cols)))

    return len(keys(heldout) & keys(workdir_interactions))
