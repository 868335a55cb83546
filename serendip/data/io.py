"""Table I/O under a work directory: ``<workdir>/<table>.parquet``, written atomically.

A writer that dies mid-way leaves only a ``.tmp`` file that readers ignore, never a
half-written table under the real name.
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


def _read_any(path: Path, name: str) -> pa.Table:
    try:
        if path.suffix == ".csv":
            return pacsv.read_csv(path)
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise SchemaError(name, None, f"cannot be read from {path}: {str(e).splitlines()[0]}",
                          "re-create the file; it is corrupt or not parquet/CSV") from None


def find_table(workdir: str | os.PathLike, name: str) -> Path:
    base = Path(workdir)
    for candidate in (base / f"{name}.parquet", base / f"{name}.csv"):
        if candidate.exists():
            return candidate
    raise SchemaError(name, None, f"not found in {base} (looked for {name}.parquet, {name}.csv)",
                      f"run the stage that writes '{name}' or pass the right --data directory")


def read_table(workdir: str | os.PathLike, name: str,
               refs: dict[str, pa.Table] | None = None, columns: list[str] | None = None) -> pa.Table:
    """Read ``<workdir>/<name>.parquet`` (or ``.csv``) and validate it against its contract."""
    if name not in SCHEMAS:
        raise SchemaError(name, None, "is not a known table", f"use one of {', '.join(SCHEMAS)}")
    table = validate(name, _read_any(find_table(workdir, name), name), refs)
    return table.select(columns) if columns else table
