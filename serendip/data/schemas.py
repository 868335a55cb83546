"""Data contracts (README 'Data contracts'): one pyarrow schema per table and a ``validate`` that says how
to fix what is wrong.

Validation *casts* safe type differences (int32 → int64, large_string → string, a CSV's string
timestamp → timestamp) so that real logs from other systems load, and refuses everything else
with a :class:`~serendip.errors.SchemaError` naming the table, the column and the fix.
Input is never reinterpreted silently:

* **Ids and other text columns** (every ``*_id``, ``title``, ``description``, media paths) are
  strings, kept verbatim: a CSV's ``001``, ``1e3`` or a 20-digit id stays exactly as written
  (:mod:`serendip.data.io` reads them as text). A parquet *integer* column is read as its decimal
  digits (``7`` → ``"7"``: the value the file holds; leading zeros the writer dropped cannot come
  back, so write ids as strings). Floating-point, boolean and other types are refused: a float
  has already rounded large ids and turned ``001`` into ``1.0``.
* **Timestamps** (``created_at``, ``ts``, ``scored_at``) are stored as UTC microseconds. Accepted
  inputs: a timestamp column of any unit (without a zone it is UTC; nanoseconds are truncated
  to microseconds); ISO-8601 text
  (``2026-01-01T10:00:00``, ``2026-01-01 10:00:00+02:00``, ``2026-01-01``; no offset = UTC); and
  **integers, read as Unix seconds** (``1767261600`` = 2026-01-01 10:00 UTC), as most exports
  write them. Integers beyond ±10^11 (year 5138) are refused — they are milliseconds or
  microseconds, and the message says how to convert them. Floats are refused.
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
    "item_clusters": {"item_id": ("items", "item_id"),
                      **{f"c{lvl}": ("clusters", "cluster_id") for lvl in range(1, 5)}},
    "examples": {"context_item_id": ("items", "item_id"),
                 "target_cluster_id": ("clusters", "cluster_id")},
    "item_serendipity": {"item_id": ("items", "item_id")},
}


MAX_UNIX_SECONDS = 10**11   # |seconds| beyond this (year 5138) are ms/us/ns, not seconds
_INTEGER_TEXT = r"^\s*[+-]?\d+\s*$"
_ZONE_TEXT = r":\d\d(\.\d+)?\s*(Z|[+-]\d\d(:?\d\d)?)\s*$"   # a time with a zone


def _first_bad(col: pa.ChunkedArray, want: pa.DataType) -> object:
    """A value of ``col`` that does not cast to ``want`` (for the error message)."""
    for value in pc.unique(col.slice(0, 100_000)).to_pylist():
        if value is None:
            continue
        try:
            pa.array([value], col.type).cast(want, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return value
    return None


def _unix_seconds(table: str, name: str, ints: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Integers as Unix seconds → UTC microseconds, refusing magnitudes that are not seconds."""
    ints = pc.cast(ints, pa.int64())
    if len(ints) - ints.null_count:
        lo, hi = (v.as_py() for v in pc.min_max(ints).values())
        if max(abs(lo), abs(hi)) > MAX_UNIX_SECONDS:
            bad = hi if abs(hi) >= abs(lo) else lo
            unit, factor = (("milliseconds", 10**3) if abs(bad) < 10**14 else
                            ("microseconds", 10**6) if abs(bad) < 10**17 else
                            ("nanoseconds", 10**9))
            raise SchemaError(table, name, f"has integer {bad}, which is not Unix seconds "
                              f"(integers are read as seconds; this looks like {unit})",
                              f"divide '{name}' by {factor} to get seconds, or write ISO-8601")
    return pc.multiply(ints, 1_000_000).cast(pa.timestamp("us", tz="UTC"))


def _text_to_timestamp(table: str, name: str, col: pa.ChunkedArray,
                       want: pa.DataType) -> pa.ChunkedArray:
    col = pc.cast(col, pa.string())
    digits = pc.match_substring_regex(col, _INTEGER_TEXT)
    if pc.any(digits).as_py():
        if not pc.all(pc.or_kleene(digits, pc.is_null(col))).as_py():
            raise SchemaError(table, name, "mixes Unix-second integers with other text",
                              f"write every '{name}' the same way (ISO-8601 or Unix seconds)")
        return pa.chunked_array([_unix_seconds(table, name, pc.cast(pc.utf8_trim_whitespace(col),
                                                                   pa.int64()))])
    col = col.combine_chunks()
    zoned = pc.fill_null(pc.match_substring_regex(col, _ZONE_TEXT), False)
    try:
        naive = pc.cast(pc.cast(pc.if_else(zoned, None, col), pa.timestamp("us")), want)  # UTC
        with_zone = pc.cast(pc.if_else(zoned, col, None), want)                # +02:00, Z
        return pa.chunked_array([pc.if_else(zoned, with_zone, naive)])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    example = next((v for v in pc.unique(col.slice(0, 100_000)).to_pylist()
                    if v is not None and _not_timestamp(v)), None)
    what = f"e.g. {example!r}" if example is not None else "mixed forms"
    raise SchemaError(table, name, f"has text that is not a timestamp ({what})",
                      f"write '{name}' as ISO-8601 (2026-01-01T10:00:00, UTC unless an offset "
                      "is given) or as integer Unix seconds")


def _not_timestamp(value: str) -> bool:
    for typ in (pa.timestamp("us"), pa.timestamp("us", tz="UTC")):
        try:
            pa.array([value]).cast(typ)
            return False
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    return True


def _cast_column(table: str, name: str, col: pa.ChunkedArray, want: pa.DataType,
                 media: bool) -> pa.ChunkedArray:
    if col.type == want:
        return col
    if media and (col.type in (pa.binary(), pa.large_binary())
                  or (pa.types.is_list(col.type) and pa.types.is_binary(col.type.value_type))):
        return col  # bytes are a valid media payload
    if pa.types.is_dictionary(col.type):                      # pandas categoricals
        col = col.cast(col.type.value_type)
        if col.type == want:
            return col
    if pa.types.is_timestamp(want):
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            return _text_to_timestamp(table, name, col, want)
        if pa.types.is_integer(col.type):                     # Unix seconds, never microseconds
            return pa.chunked_array([_unix_seconds(table, name, col)])
        if not (pa.types.is_timestamp(col.type) or pa.types.is_date(col.type)):
            raise SchemaError(table, name, f"has type {col.type}, expected a timestamp",
                              f"write '{name}' as a timestamp, ISO-8601 text or integer Unix "
                              "seconds")
        if pa.types.is_timestamp(col.type) and col.type.tz is None:
            col = col.cast(pa.timestamp(col.type.unit, tz="UTC"))   # no zone: UTC
        if pa.types.is_timestamp(col.type) and col.type.unit == "ns":
            return col.cast(want, safe=False)       # pandas' nanoseconds, truncated to us
    if pa.types.is_string(want) and not (pa.types.is_string(col.type)
                                         or pa.types.is_large_string(col.type)
                                         or pa.types.is_integer(col.type)
                                         or pa.types.is_null(col.type)):
        # floats have already rounded ids (1e3, 20 digits) and lost leading zeros
        raise SchemaError(table, name, f"has type {col.type}, expected text (ids and titles are "
                          "kept verbatim)", f"write '{name}' as strings (e.g. read the source "
                          f"with dtype=str)")
    if pa.types.is_list(want) and (pa.types.is_string(col.type)
                                   or pa.types.is_large_string(col.type)):
        # CSV: a list column arrives as "a;b;c"
        return pc.split_pattern(pc.cast(col, pa.string()), ";").cast(want)
    try:
        return col.cast(want, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        bad = _first_bad(col, want) if not pa.types.is_nested(col.type) else None
        what = f"has type {col.type}" + (f" with value {bad!r}" if bad is not None else "")
        raise SchemaError(table, name, f"{what}, expected {want}",
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
        if col.endswith("_id") and pa.types.is_string(out.column(col).type):
            empty = pc.sum(pc.equal(pc.utf8_length(out.column(col)), 0)).as_py() or 0
            if empty:
                raise SchemaError(name, col, f"has {empty} empty id(s)",
                                  f"give every row a non-empty '{col}'")
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
