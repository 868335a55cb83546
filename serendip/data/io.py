"""Table I/O under a work directory: ``<workdir>/<table>.parquet``, written atomically.

A writer that dies mid-way leaves only a ``.tmp`` file that readers ignore, never a
half-written table under the real name.

Reading goes through ONE table finder, :func:`find_table`: ``<table>.parquet`` or
``<table>.csv`` — every stage (validate, cluster, curate, finetune, score, serving, features)
accepts either. When both exist the parquet is used, unless the CSV is newer (an edited CSV is
never silently ignored: that is an error naming both files). A CSV's columns of the table's
contract are read as *text* and converted by :func:`serendip.data.schemas.validate`, so ids stay
verbatim (``001``, ``1e3``, 20-digit ids) and timestamps follow the documented rules; an empty
cell is null, a quoted empty string (``""``) is an empty string.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from serendip.data.schemas import SCHEMAS, validate
from serendip.errors import SchemaError


def table_path(workdir: str | os.PathLike, name: str) -> Path:
    """Where a stage *writes* table ``name``: ``<workdir>/<name>.parquet``. To read, or to ask
    whether a table exists, use :func:`find_table` / :func:`has_table` (they also see CSV)."""
    return Path(workdir) / f"{name}.parquet"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_parquet(table: pa.Table, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_table(workdir: str | os.PathLike, name: str, table: pa.Table,
                refs: dict[str, pa.Table] | None = None) -> Path:
    """Validate ``table`` as ``name`` and write it atomically; returns the path."""
    table = validate(name, table, refs)
    return atomic_write_parquet(table, table_path(workdir, name))


# Where a missing table comes from: the user's own data, or the stage that writes it. Never
# advise a command that would overwrite the user's data (``serendip synth``).
_SOURCE = {
    "items": "put the catalogue there as items.parquet or items.csv (README 'Data contracts'), "
             "or pass the directory that holds it",
    "interactions": "put the logs there as interactions.parquet or interactions.csv "
                    "(README 'Data contracts'), or pass the directory that holds them",
    "clusters": "run `serendip cluster --data <dir>` first, or pass the directory holding it",
    "item_clusters": "run `serendip cluster --data <dir>` first, or pass the directory "
                     "holding it",
    "examples": "run `serendip curate --data <dir>` first, or pass the directory holding it",
    "item_serendipity": "run `serendip score --workdir <dir>` first",
}


def _candidates(workdir: str | os.PathLike, name: str) -> list[Path]:
    base = Path(workdir)
    parquet, csv = base / f"{name}.parquet", base / f"{name}.csv"
    # a parquet table may be a directory of part files (Spark, pyarrow datasets)
    return [p for p in (parquet, csv) if p.is_file() or (p is parquet and p.is_dir())]


def has_table(workdir: str | os.PathLike, name: str) -> bool:
    """Whether ``workdir`` holds table ``name`` (as parquet or CSV)."""
    return bool(_candidates(workdir, name))


def find_table(workdir: str | os.PathLike, name: str) -> Path:
    """The file of table ``name`` in ``workdir``: ``<name>.parquet`` or ``<name>.csv``.

    Raises:
        SchemaError: neither exists (the fix names where the table comes from), or both exist
            and the CSV is newer than the parquet (which one the user means is unknown).
    """
    found = _candidates(workdir, name)
    if not found:
        base = Path(workdir)
        raise SchemaError(name, None, f"not found in {base} (looked for {name}.parquet, "
                          f"{name}.csv)", _SOURCE.get(name, f"pass the directory holding "
                                                            f"'{name}'"))
    if len(found) == 2 and found[1].stat().st_mtime > found[0].stat().st_mtime:
        raise SchemaError(name, None, f"both {found[0]} and the newer {found[1].name} exist",
                          f"remove the one that is stale ({found[0].name} is read when it is "
                          "the newer)")
    return found[0]


def _read_any(path: Path | str, name: str) -> pa.Table:
    try:
        if str(path).endswith(".csv"):
            text_cols = {f.name: pa.string() for f in SCHEMAS.get(name, [])}
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types=text_cols, strings_can_be_null=True, null_values=[""],
                quoted_strings_can_be_null=False))
            sep = next((c for c in ";\t|" if table.num_columns == 1
                        and c in table.column_names[0]), None)
            if sep is not None:
                raise SchemaError(name, None, f"{path.name} has one column "
                                  f"{table.column_names[0][:60]!r}: it is separated by {sep!r}",
                                  "write the CSV comma-separated (lists inside a cell use ';')")
            return table
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(name, None, f"cannot be read from {path}: {str(e).splitlines()[0]}",
                          "re-create the file; it is corrupt or not parquet/CSV") from None


def read_table_at(path: str | os.PathLike, name: str,
                  refs: dict[str, pa.Table] | None = None) -> pa.Table:
    """Read one file (parquet, or CSV when it ends in ``.csv``; a parquet path may be a URI
    such as ``s3://...``) as table ``name`` and validate it like :func:`read_table`.

    Raises:
        SchemaError: the file is missing, unreadable or breaks the contract of ``name``.
    """
    if name not in SCHEMAS:
        raise SchemaError(name, None, "is not a known table", f"use one of {', '.join(SCHEMAS)}")
    p = str(path)
    local = "://" not in p
    if local and not Path(p).is_file():
        raise SchemaError(name, None, f"file {p} does not exist",
                          f"pass the path of an existing {name} parquet or CSV file")
    return validate(name, _read_any(Path(p) if local else p, name), refs)


def read_extra_columns(workdir: str | os.PathLike, name: str,
                       columns: list[str]) -> pa.Table | None:
    """Columns beyond the contract of table ``name`` (e.g. an items table's ``labels``), read
    from the file :func:`find_table` finds (CSV columns as text, ids verbatim, unvalidated);
    ``None`` when the table or one of ``columns`` is absent."""
    if not has_table(workdir, name):
        return None
    path = find_table(workdir, name)
    try:
        if path.suffix == ".csv":
            t = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in columns}, strings_can_be_null=True,
                null_values=[""], quoted_strings_can_be_null=False))
        else:
            t = pq.read_table(path, columns=[c for c in columns
                                             if c in pq.read_schema(path).names])
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(name, None, f"cannot be read from {path}: {str(e).splitlines()[0]}",
                          "re-create the file; it is corrupt or not parquet/CSV") from None
    if any(c not in t.column_names for c in columns):
        return None
    return t.select(columns)


def read_table(workdir: str | os.PathLike, name: str,
               refs: dict[str, pa.Table] | None = None, columns: list[str] | None = None) -> pa.Table:
    """Read table ``name`` from ``workdir`` (via :func:`find_table`: parquet or CSV) and
    validate it against its contract (:func:`serendip.data.schemas.validate`).

    Raises:
        SchemaError: the table is missing, unreadable or breaks its contract.
    """
    if name not in SCHEMAS:
        raise SchemaError(name, None, "is not a known table", f"use one of {', '.join(SCHEMAS)}")
    table = validate(name, _read_any(find_table(workdir, name), name), refs)
    return table.select(columns) if columns else table
