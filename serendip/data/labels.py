"""Item labels (e.g. a public data set's genres) and how well a cluster tree agrees with them.

Labels are for *evaluation* only: they never enter the embedding. They live in
``item_labels.parquet`` (item_id string, labels list<string>, first = the item's primary
label), written by ``serendip import`` (see :mod:`serendip.data.recbole`), or come from a
``labels`` column of the raw items file. Agreement per tree level is the normalised mutual
information and the adjusted Rand index (scikit-learn) between the level's clusters and the
primary label, over the items that have one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from serendip.errors import SchemaError

ITEM_LABELS = "item_labels"
ITEM_LABELS_SCHEMA = pa.schema([("item_id", pa.string()), ("labels", pa.list_(pa.string()))])


def read_item_labels(workdir: str | os.PathLike) -> pa.Table | None:
    """``item_labels.parquet`` (item_id, labels) from ``workdir``; else a ``labels`` column of
    ``items.parquet`` (a list, or one string: the label); None when neither exists.

    Raises:
        SchemaError: ``item_labels.parquet`` without its two columns.
    """
    import pyarrow.parquet as pq

    path = Path(workdir) / f"{ITEM_LABELS}.parquet"
    if path.is_file():
        t = pq.read_table(path)
        for name in ITEM_LABELS_SCHEMA.names:
            if name not in t.column_names:
                raise SchemaError(ITEM_LABELS, name, "column is missing",
                                  f"write {ITEM_LABELS}.parquet with item_id and labels")
        return t.select(ITEM_LABELS_SCHEMA.names)
    from serendip.data.io import read_extra_columns

    t = read_extra_columns(workdir, "items", ["item_id", "labels"])   # items.parquet or .csv
    if t is not None:
        col = t.column("labels")
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = pa.array([[v] if v else [] for v in col.to_pylist()], pa.list_(pa.string()))
        return pa.table({"item_id": t.column("item_id").cast(pa.string()), "labels": col})
    return None


def primary_labels(labels: pa.Table) -> dict[str, str]:
    """item_id → first label, for items with at least one."""
    return {i: seq[0] for i, seq in zip(labels.column("item_id").to_pylist(),
                                        labels.column("labels").to_pylist()) if seq}


def label_agreement(item_clusters: pa.Table, labels: pa.Table) -> dict:
    """NMI and ARI between each level's clusters (``c1``..``c4``) and the primary label.

    Returns ``{"items": n, "labels": k, "level1": {"nmi": .., "ari": ..}, ...}``; empty
    levels when no clustered item has a label.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    first = primary_labels(labels)
    ids = item_clusters.column("item_id").to_pylist()
    keep = [k for k, i in enumerate(ids) if i in first]
    truth = [first[ids[k]] for k in keep]
    out: dict = {"items": len(keep), "labels": len(set(truth))}
    if not keep:
        return out
    for lvl in range(1, 5):
        col = f"c{lvl}"
        if col not in item_clusters.column_names:
            continue
        c = item_clusters.column(col).to_pylist()
        pred = [c[k] for k in keep]
        out[f"level{lvl}"] = {"nmi": round(float(normalized_mutual_info_score(truth, pred)), 4),
                              "ari": round(float(adjusted_rand_score(truth, pred)), 4)}
    return out
