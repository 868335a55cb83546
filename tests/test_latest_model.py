"""One rule for "the latest model" (issue 13 step 3): evaluate, export, serve and the online
simulation used three — newest serendip.json, newest directory mtime, last name in sort order —
so the online simulation could judge a different model than evaluate and export."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def workdir(tmp_path):
    mllm = tmp_path / "mllm"
    for i, name in enumerate(["zeta", "alpha"]):           # alpha saved last
        (mllm / name).mkdir(parents=True)
        meta = mllm / name / "serendip.json"
        meta.write_text("{}")
        os.utime(meta, (1_000_000 + i, 1_000_000 + i))
    (mllm / "zzz-not-a-model").mkdir()                    # no serendip.json
    work = mllm / ".alpha.work"                           # a run's working folder
    work.mkdir()
    (work / "serendip.json").write_text("{}")
    for d in mllm.iterdir():                              # a later touch of zeta's folder
        os.utime(d, (2_000_000 if d.name == "zeta" else 1_500_000,) * 2)
    return tmp_path


def test_every_caller_picks_the_model_saved_last(workdir):
    from serendip.evaluation.workdir import latest_model_dir as sim_latest
    from serendip.mllm.stage import newest_model_dir
    from serendip.mllm.workdir import latest_model_dir
    from serendip.serving.repository import latest_mllm_dir

    want = workdir / "mllm" / "alpha"
    assert latest_model_dir(workdir) == want
    assert latest_mllm_dir(workdir) == want               # export, serve
    assert newest_model_dir(workdir) == want              # evaluate, load_model
    assert sim_latest(workdir) == want                    # online simulation


def test_no_model_is_none_or_one_line(tmp_path):
    from serendip.errors import SerendipError
    from serendip.mllm.stage import newest_model_dir
    from serendip.mllm.workdir import latest_model_dir

    assert latest_model_dir(tmp_path) is None
    with pytest.raises(SerendipError, match="--model"):
        newest_model_dir(tmp_path)
