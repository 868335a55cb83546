"""End to end through the CLI on the real upstream stages: cluster → curate → finetune (MLflow
run + registration) → evaluate → promote → evaluate the champion (slow: ~1 min on a loaded
machine; the default run keeps a real fine-tune in test_mllm_train); and clean errors."""

from __future__ import annotations

import json
import shutil

import pytest
from mllm_truth import TEST_TINY

from serendip import cli

pytest.importorskip("mlflow")

TINY_SETS = [f"tiny.{k}={v}" for k, v in TEST_TINY.items()]


@pytest.fixture(scope="module")
def workdir(synth_dir, tmp_path_factory):
    wd = tmp_path_factory.mktemp("wd")
    for name in ("items.parquet", "interactions.parquet"):
        shutil.copy(synth_dir / name, wd / name)
    shutil.copytree(synth_dir / "truth", wd / "truth")
    assert cli.main(["cluster", "--data", str(wd), "--branching", "2/2/3/2",
                     "--set", "embedding.text_encoder=tfidf"]) == 0
    assert cli.main(["curate", "--data", str(wd), "--strategy", "video", "--frames", "2"]) == 0
    return wd


@pytest.mark.slow
def test_finetune_evaluate_promote(workdir, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    capsys.readouterr()
    args = ["finetune", "--workdir", str(workdir), "--quiet", "--run-name", "t",
            "--set", "steps=12", "--set", "eval_every=6", "--set", "eval_max_examples=12"]
    for s in TINY_SETS:
        args += ["--set", s]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["registered_version"] == "1" and summary["strategy"] == "video"
    assert summary["metrics"]["match_rate_constrained"] == 1.0
    assert set(summary["baselines"]) == {"most_frequent", "random_sibling"}
    assert (workdir / "mllm" / "t" / "serendip.json").exists()
    assert (workdir / "mllm" / "t" / "curves.png").exists()
    assert (workdir / "mlflow" / "mlflow.db").exists()

    assert cli.main(["evaluate", "--workdir", str(workdir), "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert "baseline: random sibling" in out and "recall (trie)" in out
    rep = json.loads((workdir / "evaluation" / "mllm_offline.json").read_text())
    assert rep["match_rate_constrained"] == 1.0 and "recall_at_3_constrained" in rep

    assert cli.main(["promote", "--workdir", str(workdir)]) == 0
    assert "first champion" in capsys.readouterr().out
    assert cli.main(["evaluate", "--workdir", str(workdir), "--model",
                     "models:/serendip-mllm@champion", "--k", "1"]) == 0
    champion = json.loads((workdir / "evaluation" / "mllm_offline.json").read_text())
    assert champion["model_version"] == "serendip-mllm/v1"
    assert champion["recall_constrained"] == rep["recall_constrained"]


def test_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["evaluate", "--workdir", str(tmp_path), "--online-sim"]) == 2
    assert "no ground truth" in capsys.readouterr().err
    assert cli.main(["finetune", "--workdir", str(tmp_path), "--no-register"]) == 2
    err = capsys.readouterr().err
    assert "is missing" in err and "fix:" in err and "Traceback" not in err
    assert cli.main(["finetune", "--workdir", str(tmp_path), "--set", "method=qlora"]) == 2
    assert "method" in capsys.readouterr().err
