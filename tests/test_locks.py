"""Issue 12 case 9: concurrent runs of a verb that writes shared state in one work directory.

Two ``train-retriever`` runs both wrote ``<workdir>/retriever/`` and a version was registered
with run A's weights and run B's metric. Every writing verb now holds a work-directory lock
(serendip/locks.py) for as long as it writes — training *and* registration — and a second run
gets one line naming the holder, before it writes anything."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from serendip import cli
from serendip.errors import SerendipError
from serendip.locks import workdir_lock

VERBS = [
    (["train-retriever", "--workdir", "{wd}", "--no-register"], "retriever"),
    (["score", "--workdir", "{wd}", "--no-feast"], "score"),
    (["export", "--workdir", "{wd}", "--source", "local"], "export"),
    (["evaluate", "--workdir", "{wd}", "--no-mlflow"], "evaluation"),
    (["evaluate", "--workdir", "{wd}", "--ablation", "--no-mlflow"], "ablation"),
    (["cluster", "--data", "{wd}"], "cluster"),
    (["curate", "--data", "{wd}"], "curate"),
    (["pipeline", "run", "training", "--workdir", "{wd}"], "pipeline-training"),
    (["demo", "--workdir", "{wd}", "--size", "small"], "demo"),
]


@pytest.mark.parametrize("argv, name", VERBS, ids=[" ".join(v[0][:2]) for v in VERBS])
def test_a_second_writer_gets_one_line_and_writes_nothing(tmp_path, capsys, argv, name):
    wd = tmp_path / "wd"
    wd.mkdir()
    before = sorted(p.name for p in wd.iterdir())
    with workdir_lock(wd, name, "first"):
        code = cli.main([a.format(wd=wd) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "another first run (pid " in err and f"is writing {name}" in err, err
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in wd.iterdir()) == sorted(before + [".locks"])


_HOLD = """
import sys, time
from serendip.locks import workdir_lock
with workdir_lock(sys.argv[1], "retriever", "train-retriever"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_lock_is_held_across_processes_and_released_when_the_holder_dies(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = cli.main(["train-retriever", "--workdir", str(tmp_path), "--no-register"])
        err = capsys.readouterr().err
        assert code == 2
        assert f"another train-retriever run (pid {holder.pid}" in err
    finally:
        holder.kill()                        # SIGKILL: no cleanup code runs
        holder.wait(timeout=30)
    for _ in range(50):                      # the kernel released the lock with the process
        try:
            with workdir_lock(tmp_path, "retriever", "second"):
                break
        except SerendipError:
            time.sleep(0.1)
    else:
        pytest.fail("the lock outlived its holder")
