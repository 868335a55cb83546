"""Work-directory locks: two runs of a verb that writes shared state never interleave.

Every verb that writes into a work directory (``cluster``, ``curate``, ``finetune``,
``train-retriever``, ``score``, ``evaluate``, ``export``, ``pipeline run``, ``demo``) holds an
exclusive lock on what it writes for as long as it writes it — for ``finetune`` and
``train-retriever`` until the model is registered, so a registered version always pairs one
run's weights with the same run's metrics. A second run gets one line naming the holder, instead
of overwriting the first run's files half-way (issue 12, case 9).

Locks are ``fcntl.flock`` on ``<workdir>/.locks/<name>.lock``: the kernel releases them when
the holding process exits, however it exits (a killed run never leaves a stale lock). Distinct
outputs use distinct names (``finetune`` locks ``mllm-<run name>``), so runs that write
different directories proceed side by side.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serendip.errors import SerendipError

LOCK_DIR = ".locks"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another run"
    since = time.strftime("%H:%M:%S", time.localtime(info.get("since", 0)))
    return f"another {info.get('verb', 'serendip')} run (pid {info.get('pid', '?')}, since {since})"


@contextmanager
def workdir_lock(workdir: str | os.PathLike, name: str, verb: str | None = None,
                 fix: str | None = None) -> Iterator[Path]:
    """Hold the exclusive lock ``name`` of ``workdir`` for the ``with`` block.

    Args:
        workdir: the work directory (created if missing).
        name: what is written, e.g. ``"retriever"`` or ``"mllm-<run>"`` (a file-name part).
        verb: the command holding it, shown to a run that finds it taken.
        fix: the advice in the error (default: wait, or use another work directory).

    Raises:
        SerendipError: the lock is held by another process (field ``workdir``), raised at once
            (never waits), before anything is written.
    """
    import fcntl

    d = Path(workdir) / LOCK_DIR
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name.replace('/', '-')}.lock"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SerendipError(
            f"{_holder(path)} is writing {name} in {workdir}", field="workdir",
            fix=fix or "wait for it to finish (a killed run releases the lock), or use another "
                       "work directory") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"verb": verb or name, "pid": os.getpid(),
                                 "since": time.time()}).encode())
        yield path
    finally:
        os.close(fd)                      # closing the descriptor releases the flock
