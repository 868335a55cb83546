"""Import RecBole atomic files (``.inter``, ``.item``) into Serendip's tables.

RecBole's atomic format (https://recbole.io/docs/user_guide/data/atomic_files.html) covers
dozens of public recommendation data sets: one tab-separated file per kind, a typed header
(``item_id:token``, ``movie_title:token_seq``, ``timestamp:float``, ``class:token_seq``) and one
record per line; ``token_seq`` values are space-separated.

What becomes what (README 'Data contracts'):

* ``items``: ``item_id`` verbatim (never parsed as a number), ``title`` from a named field
  (default: the first of :data:`TITLE_FIELDS` in the ``.item`` header), ``impressions`` =
  number of interaction records of the item in ``.inter`` (0 for items nobody rated).
* ``interactions``: per user, records ordered by ``(timestamp, line number)`` — ties within
  one timestamp keep the file's order (a stable sort) — and every two consecutive records
  give one (context → next) pair with ``ts`` = the next record's time and ``satisfaction`` =
  the next record's rating mapped linearly onto [0, 1]: ``(r − lo) / (hi − lo)`` over the
  rating scale (``rating_scale``, default: the minimum and maximum rating in the file; for
  MovieLens 1–5 that is ``(r − 1) / 4``). Without a rating field every record is a positive
  (implicit feedback): satisfaction 1.0.
* ``item_labels`` (item_id, labels list<string>): a category field of ``.item`` (default: the
  first of :data:`LABEL_FIELDS`, e.g. ml-100k's ``class:token_seq`` genres), kept only to
  score cluster trees against (``serendip cluster`` reports NMI/ARI per level). Labels keep
  the file's order; the first is the item's primary label.

Bad files raise :class:`~serendip.errors.SchemaError` naming ``file:line`` and the field.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from serendip.data.labels import ITEM_LABELS, ITEM_LABELS_SCHEMA, read_item_labels  # noqa: F401
from serendip.errors import ConfigError, SchemaError, SerendipError

TITLE_FIELDS = ("title", "movie_title", "name", "item_name", "product_name", "book_title")
LABEL_FIELDS = ("class", "genre", "genres", "categories", "category", "categories_seq")
FIELD_TYPES = ("token", "token_seq", "float", "float_seq")


class AtomicFileError(SchemaError):
    """A bad atomic file, located compiler-style: ``field`` is ``file[:line][:field]``."""

    def __init__(self, file: str, line: int | None, column: str | None, message: str,
                 fix: str):
        self.table, self.column, self.line = file, column, line
        where = ":".join(str(p) for p in (file, line, column) if p not in (None, ""))
        SerendipError.__init__(self, message, field=where, fix=fix)


@dataclass
class RecBoleImportConfig:
    """Which RecBole fields feed which column (None: the documented default)."""

    user_field: str = field(default="user_id", metadata={
        "help": "RecBole .inter field holding the user id (copied verbatim)"})
    item_field: str = field(default="item_id", metadata={
        "help": "RecBole .inter/.item field holding the item id (copied verbatim)"})
    time_field: str = field(default="timestamp", metadata={
        "help": "RecBole .inter field holding the time, in Unix seconds (float)"})
    rating_field: str | None = field(default=None, metadata={
        "help": "field holding the rating; null: 'rating' when present, else implicit "
                "feedback (satisfaction 1.0); '' ignores ratings"})
    title_field: str | None = field(default=None, metadata={
        "help": ".item field holding the title; null: the first known title field present"})
    label_field: str | None = field(default=None, metadata={
        "help": ".item field holding the item labels (genres); null: the first known label "
                "field present; '' none"})
    rating_scale: tuple[float, float] | None = field(default=None, metadata={
        "help": "rating scale [lo, hi] mapped onto satisfaction 0..1; hi > lo (null: min/max "
                "in the file)"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if self.rating_scale is not None:
            lo, hi = (float(v) for v in self.rating_scale)
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise ConfigError(f"rating scale {lo}-{hi} is empty", field="rating_scale",
                                  fix="give the scale as LO-HI with HI > LO, e.g. 1-5")


@dataclass
class AtomicFile:
    """One parsed atomic file: field names, types and the raw string columns."""

    path: Path
    names: list[str]
    types: list[str]
    columns: dict[str, list[str]]

    def need(self, field: str, option: str) -> list[str]:
        if field not in self.columns:
            raise AtomicFileError(self.path.name, None, field,
                                  f"field is missing (header has {', '.join(self.names)})",
                                  f"name the right field with {option}")
        return self.columns[field]


def read_atomic(path: str | os.PathLike) -> AtomicFile:
    """Parse one atomic file (UTF-8, tab-separated, typed header). Values stay strings,
    verbatim; line numbers count from 1 with the header as line 1.

    Raises:
        SchemaError: unreadable file, a header entry without a known ``:type``, a duplicate
            field, or a line with the wrong number of fields (named ``file:line``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise AtomicFileError(path.name, line, None, "is not valid UTF-8",
                              "re-encode the file as UTF-8") from None
    except OSError as e:
        raise AtomicFileError(path.name, None, None, f"cannot be read ({e.strerror})",
                              "check the path and permissions") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or not lines[0].strip():
        raise AtomicFileError(path.name, 1, None, "has no header",
                              "start the file with a typed header, e.g. user_id:token<TAB>...")
    names, types = [], []
    for entry in lines[0].rstrip("\r").split("\t"):
        name, sep, typ = entry.rpartition(":")
        if not sep or not name or typ not in FIELD_TYPES:
            raise AtomicFileError(path.name, 1, entry or "(empty)",
                                  "header entry is not name:type",
                                  "write it as name:type with type one of "
                                  + ", ".join(FIELD_TYPES))
        if name in names:
            raise AtomicFileError(path.name, 1, name, "field appears twice in the header",
                                  "give every field one column")
        names.append(name)
        types.append(typ)
    columns: dict[str, list[str]] = {n: [] for n in names}
    cols = [columns[n] for n in names]
    width = len(names)
    for i, raw in enumerate(lines[1:], start=2):
        parts = raw.rstrip("\r").split("\t")
        if len(parts) != width:
            if raw.strip() == "" and i == len(lines):
                continue
            raise AtomicFileError(path.name, i, None,
                                  f"has {len(parts)} fields, the header declares {width}",
                                  "separate fields with one tab; no tabs inside values")
        for col, value in zip(cols, parts):
            col.append(value)
    return AtomicFile(path, names, types, columns)


def _floats(f: AtomicFile, field: str, option: str) -> np.ndarray:
    values = f.need(field, option)
    out = np.empty(len(values), np.float64)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except ValueError:
            out[i] = np.nan
        if not math.isfinite(out[i]):
            raise AtomicFileError(f.path.name, i + 2, field, f"{v!r} is not a finite number",
                                  f"write '{field}' as a number on every line")
    return out


def _ids(f: AtomicFile, field: str, option: str) -> list[str]:
    values = f.need(field, option)
    for i, v in enumerate(values):
        if v == "":
            raise AtomicFileError(f.path.name, i + 2, field, "is empty",
                                  f"give every line a '{field}'")
    return values


def find_atomic_files(src: str | os.PathLike) -> tuple[Path, Path]:
    """The ``.inter`` and ``.item`` files in ``src`` (exactly one of each).

    Raises:
        SchemaError: ``src`` is not a directory, or has none or several of either kind.
    """
    d = Path(src)
    if not d.is_dir():
        raise AtomicFileError(str(d), None, None, "is not a directory",
                              "pass --src a folder holding <name>.inter and <name>.item")
    found = []
    for ext in ("inter", "item"):
        files = sorted(d.glob(f"*.{ext}"))
        if len(files) != 1:
            what = "no" if not files else f"{len(files)}"
            raise AtomicFileError(str(d), None, None, f"holds {what} .{ext} file(s)",
                                  f"keep exactly one <name>.{ext} file in the folder")
        found.append(files[0])
    return found[0], found[1]


def _default_field(f: AtomicFile, chosen: str | None, candidates: tuple[str, ...],
                   option: str, required: bool) -> str | None:
    if chosen == "":
        return None
    if chosen is not None:
        f.need(chosen, option)
        return chosen
    for name in candidates:
        if name in f.columns:
            return name
    if required:
        seqs = [n for n, t in zip(f.names, f.types) if t in ("token", "token_seq")]
        raise AtomicFileError(f.path.name, None, None,
                              f"has none of the default fields {', '.join(candidates)}",
                              f"name the field with {option} (one of {', '.join(seqs)})")
    return None


def convert(inter: AtomicFile, item: AtomicFile, cfg: RecBoleImportConfig | None = None
            ) -> tuple[dict[str, pa.Table], dict]:
    """Atomic files → (``{"items", "interactions", "item_labels"?}`` tables, a summary of the
    fields used). See the module docstring for every rule; ``item_labels`` is present only
    when a label field is.

    Raises:
        SchemaError: a missing field, a non-numeric rating or timestamp, an empty id, a
            duplicate item id, or an interaction naming an item the ``.item`` file lacks —
            each named by ``file:line`` and field.
        ConfigError: a rating outside the declared scale, or an empty scale.
    """
    cfg = cfg or RecBoleImportConfig()
    cfg.check()
    # ---- items
    item_ids = _ids(item, cfg.item_field, "--item-field")
    index: dict[str, int] = {}
    for i, iid in enumerate(item_ids):
        if iid in index:
            raise AtomicFileError(item.path.name, i + 2, cfg.item_field,
                                  f"item {iid!r} already on line {index[iid] + 2}",
                                  "keep one line per item")
        index[iid] = i
    title_field = _default_field(item, cfg.title_field, TITLE_FIELDS, "--title-field", True)
    titles = item.columns[title_field]
    label_field = _default_field(item, cfg.label_field, LABEL_FIELDS, "--label-field", False)
    # ---- interactions
    users = _ids(inter, cfg.user_field, "--user-field")
    inter_items = _ids(inter, cfg.item_field, "--item-field")
    times = _floats(inter, cfg.time_field, "--time-field")
    pos = np.empty(len(inter_items), np.int64)
    for i, iid in enumerate(inter_items):
        j = index.get(iid)
        if j is None:
            raise AtomicFileError(inter.path.name, i + 2, cfg.item_field,
                                  f"item {iid!r} is not in {item.path.name}",
                                  f"add it to {item.path.name} or drop the line")
        pos[i] = j
    rating_field = cfg.rating_field
    if rating_field is None:
        rating_field = "rating" if "rating" in inter.columns else ""
    scale = None
    if rating_field:
        ratings = _floats(inter, rating_field, "--rating-field")
        lo, hi = (cfg.rating_scale if cfg.rating_scale is not None
                  else (float(ratings.min()), float(ratings.max())) if len(ratings) else (0, 1))
        lo, hi = float(lo), float(hi)
        bad = np.nonzero((ratings < lo) | (ratings > hi))[0]
        if len(bad):
            i = int(bad[0])
            raise AtomicFileError(inter.path.name, i + 2, rating_field,
                                  f"rating {ratings[i]:g} is outside the scale {lo:g}-{hi:g}",
                                  "fix the line or widen --rating-scale")
        sat = (ratings - lo) / (hi - lo) if hi > lo else np.ones_like(ratings)
        scale = (lo, hi)
    else:
        sat = np.ones(len(users))
    # per user: stable sort by (user, time, line) — ties keep the file's order
    user_codes = {u: k for k, u in enumerate(dict.fromkeys(users))}
    ucode = np.fromiter((user_codes[u] for u in users), np.int64, len(users))
    order = np.lexsort((np.arange(len(users)), times, ucode))
    same_user = ucode[order[1:]] == ucode[order[:-1]]
    ctx, nxt = order[:-1][same_user], order[1:][same_user]
    ts = pa.array((times[nxt] * 1e6).round().astype(np.int64), pa.int64()).cast(
        pa.timestamp("us", tz="UTC"))
    interactions = pa.table({
        "user_id": pa.array([users[i] for i in nxt], pa.string()),
        "context_item_id": pa.array([inter_items[i] for i in ctx], pa.string()),
        "next_item_id": pa.array([inter_items[i] for i in nxt], pa.string()),
        "satisfaction": pa.array(np.clip(sat[nxt], 0.0, 1.0), pa.float64()),
        "ts": ts,
    })
    impressions = np.bincount(pos, minlength=len(item_ids)).astype(np.int64)
    items = pa.table({"item_id": pa.array(item_ids, pa.string()),
                      "title": pa.array(titles, pa.string()),
                      "impressions": pa.array(impressions, pa.int64())})
    out = {"items": items, "interactions": interactions}
    meta = {"title_field": title_field, "label_field": label_field,
            "rating_field": rating_field or None, "users": len(user_codes),
            "records": len(users),
            "satisfaction": (f"(rating - {scale[0]:g}) / ({scale[1]:g} - {scale[0]:g})"
                             if scale else "1.0 (no rating field: implicit feedback)")}
    if label_field is not None:
        labels = [v.split(" ") if v else [] for v in item.columns[label_field]]
        labels = [[t for t in seq if t] for seq in labels]
        out[ITEM_LABELS] = pa.table({"item_id": items.column("item_id"),
                                     "labels": pa.array(labels, pa.list_(pa.string()))},
                                    schema=ITEM_LABELS_SCHEMA)
    return out, meta


def import_recbole(src: str | os.PathLike, out: str | os.PathLike,
                   cfg: RecBoleImportConfig | None = None) -> dict:
    """Read ``<src>/<name>.inter`` and ``<name>.item``, write ``items``, ``interactions`` (and
    ``item_labels`` when a label field exists) as parquet under ``out`` — each validated
    against its contract and written atomically. Returns a summary dict (counts, fields used,
    rating scale, time range).

    Raises:
        SchemaError, ConfigError: see :func:`read_atomic` and :func:`convert`.
    """
    from serendip.data.io import atomic_write_parquet, table_path, write_table

    cfg = cfg or RecBoleImportConfig()
    cfg.check()
    inter_path, item_path = find_atomic_files(src)
    inter, item = read_atomic(inter_path), read_atomic(item_path)
    tables, meta = convert(inter, item, cfg)
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    write_table(outdir, "items", tables["items"])
    write_table(outdir, "interactions", tables["interactions"], refs={"items": tables["items"]})
    if ITEM_LABELS in tables:
        atomic_write_parquet(tables[ITEM_LABELS], table_path(outdir, ITEM_LABELS))
    else:
        table_path(outdir, ITEM_LABELS).unlink(missing_ok=True)
    ts = tables["interactions"].column("ts")
    span = [None, None]
    if len(ts):
        import pyarrow.compute as pc

        mm = pc.min_max(ts)
        span = [mm["min"].as_py().isoformat(), mm["max"].as_py().isoformat()]
    return {"src": str(src), "out": str(outdir),
            "files": [inter_path.name, item_path.name],
            "items": tables["items"].num_rows,
            "interactions": tables["interactions"].num_rows, **meta,
            "time_range": span,
            "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
