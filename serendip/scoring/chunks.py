"""The committed result chunks + their manifest under ``<workdir>/scoring`` (resumable runs)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from serendip.data.io import atomic_write_bytes
from serendip.data.schemas import SCHEMAS
from serendip.errors import SerendipError

SCORING_DIR = "scoring"
MANIFEST = "manifest.json"


class ChunkStore:
    """Committed result chunks + their manifest under ``<workdir>/scoring``."""

    def __init__(self, workdir: str | os.PathLike):
        self.dir = Path(workdir) / SCORING_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.dir / MANIFEST
        self._lock_fd: int | None = None

    def lock(self) -> None:
        import fcntl

        fd = os.open(self.dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SerendipError(f"another scoring run is using {self.dir}", field="workdir",
                                fix="wait for it to finish (a killed run releases the lock)"
                                ) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"format": 1, "chunks": []}
        try:
            data = json.loads(self.manifest_path.read_text())
            if not isinstance(data.get("chunks"), list):
                raise ValueError
            return data
        except (ValueError, OSError):
            return {"format": 1, "chunks": []}       # unreadable manifest: redo the chunks

    def load(self) -> tuple[pa.Table | None, dict]:
        """Rows of every intact committed chunk; discards corrupt or unrecorded files."""
        manifest = self._manifest()
        good, tables, corrupt = [], [], []
        for entry in manifest["chunks"]:
            path = self.dir / entry["file"]
            try:
                data = path.read_bytes()
                if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                    raise ValueError("checksum mismatch")
                t = pq.read_table(io.BytesIO(data))
                if t.num_rows != entry["rows"]:
                    raise ValueError("row count mismatch")
                tables.append(t.cast(SCHEMAS["item_serendipity"]))
                good.append(entry)
            except (OSError, ValueError, pa.ArrowInvalid):
                corrupt.append(entry["file"])
                path.unlink(missing_ok=True)
        recorded = {e["file"] for e in good}
        stray = [p for p in self.dir.iterdir()
                 if p.name.startswith(("chunk-", ".chunk-")) and p.name not in recorded]
        for p in stray:                              # uncommitted (killed before the manifest)
            p.unlink(missing_ok=True)
        if len(good) != len(manifest["chunks"]):
            manifest["chunks"] = good
            self._write_manifest(manifest)
        table = pa.concat_tables(tables) if tables else None
        return table, {"chunks": len(good), "corrupt_chunks": corrupt,
                       "stray_files": len(stray)}

    def commit(self, table: pa.Table) -> str:
        manifest = self._manifest()
        seq = max((e["seq"] for e in manifest["chunks"]), default=-1) + 1
        name = f"chunk-{seq:06d}.parquet"
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        atomic_write_bytes(self.dir / name, data)
        manifest["chunks"].append({"seq": seq, "file": name, "rows": table.num_rows,
                                   "sha256": hashlib.sha256(data).hexdigest()})
        self._write_manifest(manifest)
        return name

    def _write_manifest(self, manifest: dict) -> None:
        atomic_write_bytes(self.manifest_path, json.dumps(manifest, indent=1).encode())

    def clear(self) -> None:
        """Drop the chunks once the final table holds them: the manifest goes first, so a
        crash half-way leaves only unrecorded files, which the next :meth:`load` deletes."""
        manifest = self._manifest()
        self.manifest_path.unlink(missing_ok=True)
        for e in manifest["chunks"]:
            (self.dir / e["file"]).unlink(missing_ok=True)
