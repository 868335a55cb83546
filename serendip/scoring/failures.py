"""Row-level failures: what one item's inputs can raise, and ``scoring_errors.parquet``."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from serendip.data.io import atomic_write_bytes
from serendip.errors import SerendipError

ERRORS_FILE = "scoring_errors.parquet"
ERRORS_SCHEMA = pa.schema([("item_id", pa.string()), ("stage", pa.string()),
                           ("reason", pa.string()), ("model_version", pa.string()),
                           ("failed_at", pa.timestamp("us", tz="UTC"))])
ROW_ERRORS = (SerendipError, OSError, ValueError)   # what one item's inputs can raise


def failure_reason(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:500]


def write_errors(workdir: str | os.PathLike, rows: list[dict]) -> Path:
    """``<workdir>/scoring_errors.parquet`` (atomic): this run's failed items with the stage
    (``inputs`` / ``predict``) and the one-line reason; an empty table when none failed."""
    table = pa.Table.from_pylist(rows, schema=ERRORS_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    path = Path(workdir) / ERRORS_FILE
    atomic_write_bytes(path, buf.getvalue())
    return path
