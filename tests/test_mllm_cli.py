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
    # the baselines the gate compares with: every serendipitous pair of held-out contexts
    choice = rep["choice_baselines"]["case_sets"][0]
    assert {"random_sibling", "transition", "model"} <= set(choice["methods"])
    assert choice["best_baseline"] in choice["methods"]
    assert "transition" in out

    # 12 steps rarely beat the baselines: the gate's refusal is tests/test_gate.py's subject
    assert cli.main(["promote", "--workdir", str(workdir), "--force"]) == 0
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
    assert "not found" in err and "fix:" in err and "Traceback" not in err
    assert "synth" not in err          # the advice never overwrites the user's data
    assert cli.main(["finetune", "--workdir", str(tmp_path), "--set", "method=qlora"]) == 2
    assert "method" in capsys.readouterr().err


def test_reasoning_budget_fails_before_the_first_step(workdir, capsys):
    """Issue 12 case 11: `--set reasoning_tokens=2` trained until the first evaluation (the
    checkpoints of steps 1-2 were written), then failed. It now fails before any step."""
    args = ["finetune", "--workdir", str(workdir), "--no-register", "--quiet", "--run-name",
            "budget", "--set", "prompt.strategy=cot", "--set", "steps=3", "--set",
            "eval_every=3", "--set", "save_every=1", "--set", "batch_size=4",
            "--set", "reasoning_tokens=2", *sum((["--set", s] for s in TINY_SETS), [])]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "reasoning_tokens" in err and "fix: use >=" in err
    assert len(err.strip().splitlines()) == 1
    assert not list((workdir / "mllm").glob("*budget*/**/step-*"))   # no step was trained


@pytest.mark.parametrize("setting, field", [
    ("steps=1.5", "steps"), ("lora_targets=q_proj", "lora_targets"),
    ("base_model=123", "base_model"), ("reasoning_tokens=1", "reasoning_tokens"),
    ("tiny.text_heads=3", "tiny.text_heads"), ("tiny.patch_size=7", "tiny.patch_size"),
    ("grad_clip=0", "grad_clip"), ("lora_dropout=1", "lora_dropout"),
    ("eval_batch_size=0", "eval_batch_size"), ("warmup_steps=-1", "warmup_steps")])
def test_every_finetune_setting_is_checked_before_reading_data(tmp_path, capsys, setting,
                                                               field):
    """Checked at once (an empty work dir: the data is never reached) — one line, exit 2."""
    assert cli.main(["finetune", "--workdir", str(tmp_path), "--no-register",
                     "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"serendip finetune: error: {field}:"), err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, expected", [
    (["train-retriever", "--set", "epochs=2.5"], "epochs: 2.5 is not an integer"),
    (["train-retriever", "--set", "heads=3"], "heads: dim 32 is not a multiple of heads 3"),
    (["train-retriever", "--set", "dropout=1"], "dropout"),
    (["evaluate", "--ablation", "--seeds", "a,b"], "seeds must be comma-separated integers"),
    (["evaluate", "--k", "0"], "--k must be >= 1")])
def test_other_verbs_check_settings_before_work(tmp_path, capsys, argv, expected):
    with pytest.raises(SystemExit) if argv[0] == "evaluate" else _no_raise():
        code = cli.main([argv[0], "--workdir", str(tmp_path), *argv[1:]])
        assert code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def _no_raise():
    from contextlib import nullcontext

    return nullcontext()


def test_finetune_locks_its_run_directory(workdir, capsys):
    """Issue 12 case 9 for finetune: a second run with the same run name (same output
    directory, same registration) gets one line; nothing of it is written."""
    from serendip.locks import workdir_lock

    with workdir_lock(workdir, "mllm-locked", "first"):
        code = cli.main(["finetune", "--workdir", str(workdir), "--no-register", "--quiet",
                         "--run-name", "locked", "--set", "steps=1"])
    err = capsys.readouterr().err
    assert code == 2 and "another first run (pid" in err and "is writing mllm-locked" in err
    assert "--run-name" in err and not (workdir / "mllm" / "locked").exists()
