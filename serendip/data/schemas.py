"""Data contracts (DESIGN.md §4): one pyarrow schema per table and a ``validate`` that says how
to fix what is wrong.

Validation *casts* safe type differences (int32 → int64, large_string → string, a CSV's string
timestamp → timestamp) so that real logs from other systems load, and refuses everything else
with a :class:`~serendip.errors.SchemaError` naming the table, the column and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from serendip.errors import SchemaError

TS = pa.timestamp("us", tz="UTC")

SCHEMAS: dict[str, pa.Schema] = {
    "items": pa.schema([
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("created_at", TS),
        ("duration_s", pa.float64()),
        ("thumbnail", pa.string()),          # path, synth:// URI; binary also accepted
        ("frames", pa.list_(pa.string())),   # paths or URIs; list<binary> also accepted
        ("impressions", pa.int64()),
    ]),
    "interactions": pa.schema([
        ("user_id", pa.string()),
        ("context_item_id", pa.string()),
        ("next_item_id", pa.string()),
        ("satisfaction", pa.float64()),
        ("ts", TS),
    ]),
    "clusters": pa.schema([
        ("cluster_id", pa.string()),
        ("level", pa.int64()),
        ("parent_id", pa.string()),          # null for level 1
        ("description", pa.string()),
        ("size", pa.int64()),
        ("traffic", pa.int64()),
    ]),
    "item_clusters": pa.schema([
        ("item_id", pa.string()),
        ("c1", pa.string()),
        ("c2", pa.string()),
        ("c3", pa.string()),
        ("c4", pa.string()),
    ]),
    "examples": pa.schema([
        ("context_item_id", pa.string()),
        ("target_cluster_id", pa.string()),
        ("target_description", pa.string()),
        ("satisfaction", pa.float64()),
        ("strategy", pa.string()),
        ("prompt", pa.string()),
        ("images", pa.list_(pa.string())),
        ("reasoning", pa.string()),          # chain-of-thought prefix (null otherwise)
        ("split", pa.string()),              # "train" or "test", split by context item
    ]),
    "item_serendipity": pa.schema([
        ("item_id", pa.string()),
        ("cluster_ids", pa.list_(pa.string())),
        ("descriptions", pa.list_(pa.string())),
        ("scores", pa.list_(pa.float64())),
        ("model_version", pa.string()),
        ("content_hash", pa.string()),
        ("scored_at", TS),
    ]),
}
TABLES = tuple(SCHEMAS)


@dataclass(frozen=True)
class Rules:
    """What a table promises beyond column types."""

    ids: tuple[str, ...] = ()                     # non-null columns
    unique: tuple[str, ...] = ()                  # columns whose values are unique
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    media: tuple[str, ...] = ()                   # columns that may hold bytes instead of paths
    optional: tuple[str, ...] = ()                # columns that may be absent (filled with nulls)


RULES: dict[str, Rules] = {
    "items": Rules(ids=("item_id", "title", "impressions"), unique=("item_id",),
                   ranges={"impressions": (0, float("inf")), "duration_s": (0, float("inf"))},
                   media=("thumbnail", "frames"),
                   optional=("created_at", "duration_s", "thumbnail", "frames")),
    "interactions": Rules(ids=("user_id", "context_item_id", "next_item_id", "satisfaction", "ts"),
                          ranges={"satisfaction": (0.0, 1.0)}),
    "clusters": Rules(ids=("cluster_id", "level", "description"),
                      unique=("cluster_id", "description"), ranges={"level": (1, 4)}),
    "item_clusters": Rules(ids=("item_id", "c1", "c2", "c3", "c4"), unique=("item_id",)),
    "examples": Rules(ids=("context_item_id", "target_cluster_id", "target_description",
                           "strategy", "split"), optional=("reasoning",)),
    "item_serendipity": Rules(ids=("item_id", "cluster_ids", "model_version"),
                              unique=("item_id",)),
}

# Which columns must point at an existing row of another table.
REFERENCES: dict[str, dict[str, tuple[str, str]]] = {
    "interactions": {"context_item_id": ("items", "item_id"),
                     "next_item_id": ("items", "item_id")},
    "item_clusters": {"item_id": ("items", "item_id")},
    "examples": {"context_item_id": ("items", "item_id"),
                 "target_cluster_id": ("clusters", "cluster_id")},
    "item_serendipity": {"item_id": ("items", "item_id")},
}


def _cast_column(table: str, name: str, col: pa.ChunkedArray, want: pa.DataType,
                 media: bool) -> pa.ChunkedArray:
    if col.type == want:
        return col
    if media and (col.type in (pa.binary(), pa.large_binary())
                  or (pa.types.is_list(col.type) and pa.types.is_binary(col.type.value_type))):
        return col  # bytes are a valid media payload
    if pa.types.is_timestamp(want) and pa.types.is_string(col.type):
        try:
            return pc.cast(pc.strptime(col, format="%Y-%m-%dT%H:%M:%S", unit="us"), want)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    if pa.types.is_list(want) and pa.types.is_string(col.type):
        # CSV: a list column arrives as "a;b;c"
        return pc.split_pattern(col, ";").cast(want)
    try:
        return col.cast(want, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        raise SchemaError(table, name, f"has type {col.type}, expected {want}",
                          f"write '{name}' as {want}") from None


def validate(name: str, table: pa.Table,
             refs: dict[str, pa.Table] | None = None) -> pa.Table:
    """Check ``table`` against the contract of table ``name`` and return it in canonical form.

    ``refs`` maps other table names to loaded tables; dangling ids are checked against them
    (e.g. ``validate("interactions", t, refs={"items": items})``).
    """
    if name not in SCHEMAS:
        raise SchemaError(name, None, "is not a known table", f"use one of {', '.join(TABLES)}")
    schema, rules = SCHEMAS[name], RULES[name]
    columns = []
    for fld in schema:
        if fld.name not in table.column_names:
            if fld.name in rules.optional:
                columns.append(pa.nulls(table.num_rows, fld.type))
                continue
            raise SchemaError(name, fld.name, "column is missing",
                              f"add column '{fld.name}' ({fld.type}); see README 'Data contracts'")
        columns.append(_cast_column(name, fld.name, table.column(fld.name), fld.type,
                                    fld.name in rules.media))
    out = pa.table(columns, names=schema.names)

    for col in rules.ids:
        nulls = out.column(col).null_count
        if nulls:
            raise SchemaError(name, col, f"has {nulls} null value(s)",
                              f"drop or fill rows with a null '{col}'")
    for col in rules.unique:
        c = out.column(col)
        if pc.count_distinct(c).as_py() != len(c) - c.null_count:
            counts = pc.value_counts(c)
            dup = counts.filter(pc.greater(counts.field("counts"), 1))
            example = dup[0]["values"].as_py() if len(dup) else "?"
            raise SchemaError(name, col, f"has duplicate values (e.g. {example!r})",
                              f"make '{col}' unique")
    for col, (lo, hi) in rules.ranges.items():
        c = out.column(col)
        if len(c) == c.null_count:
            continue
        mn, mx = pc.min_max(c).values()
        if (mn.as_py() is not None and mn.as_py() < lo) or (mx.as_py() is not None and mx.as_py() > hi):
            raise SchemaError(name, col, f"has values in [{mn}, {mx}], outside [{lo}, {hi}]",
                              f"clip or rescale '{col}' into [{lo}, {hi}]")
    for col, (other, key) in REFERENCES.get(name, {}).items():
        if refs and other in refs:
            known = refs[other].column(key)
            missing = pc.invert(pc.is_in(out.column(col), value_set=known))
            n = pc.sum(missing).as_py() or 0
            if n:
                example = out.column(col).filter(missing)[0].as_py()
                raise SchemaError(name, col, f"{n} row(s) reference unknown {other}.{key} "
                                  f"(e.g. {example!r})",
                                  f"add the missing rows to '{other}' or drop these rows")
    return out
