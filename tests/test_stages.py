"""The library stage entries (issue 13, step 1) on a work directory, with a recording tracker in
place of MLflow: what the CLI, the KFP components and the demo all call."""

from __future__ import annotations

import json
from contextlib import contextmanager

from mllm_truth import TEST_TINY, write_truth_workdir

from serendip.config import load_config
from serendip.mllm.ablation import AblationConfig, ablation_stage
from serendip.mllm.config import FinetuneConfig
from serendip.mllm.stage import finetune_stage
from serendip.prompts import PromptConfig
from serendip.tracking import NullTracker, Tracker

SETTINGS = {"steps": 4, "batch_size": 6, "eval_every": 2, "save_every": 4,
            "eval_max_examples": 8, "reasoning_tokens": 12,
            **{f"tiny.{k}": v for k, v in TEST_TINY.items()}}


class Recorder:
    """A Tracker that remembers every call."""

    challenger_alias = "challenger"

    def __init__(self):
        self.calls: list[tuple] = []

    @contextmanager
    def start_run(self, experiment, run_name=None, params=None):
        self.calls.append(("start_run", experiment, run_name, params))
        yield "run-1"

    def log_metrics(self, metrics, step=None):
        self.calls.append(("log_metrics", dict(metrics), step))

    def log_artifact(self, path, artifact_path=None):
        self.calls.append(("log_artifact", str(path), artifact_path))

    def log_tables(self, tables):
        self.calls.append(("log_tables", sorted(tables)))

    def register_model(self, model_dir, metrics):
        self.calls.append(("register_model", str(model_dir), dict(metrics)))
        return "7"

    def promote(self, version):
        self.calls.append(("promote", version))
        return True, f"v{version} promoted"

    def named(self, name):
        return [c for c in self.calls if c[0] == name]


def test_finetune_stage_reports_to_its_tracker_and_leaves_the_config_alone(synth_dir, tmp_path):
    wd = write_truth_workdir(synth_dir, tmp_path / "wd", PromptConfig("video", 1), n_items=48)
    prompt = PromptConfig("text")
    cfg = load_config(FinetuneConfig, settings={**SETTINGS, "prompt.strategy": "text"})
    assert cfg.prompt == prompt
    rec = Recorder()
    assert isinstance(rec, Tracker) and isinstance(NullTracker(), Tracker)
    out = finetune_stage(wd, tmp_path / "model", cfg, tracker=rec, promote=True, progress=False,
                         device="cpu", nproc=1)
    assert cfg.prompt == prompt            # the caller's config is not changed (it was: None)
    assert out["model_dir"] == str(tmp_path / "model") and out["strategy"] == "text"
    assert (out["registered_version"], out["alias"], out["mlflow_run_id"]) == ("7", "challenger",
                                                                              "run-1")
    assert (out["promoted"], out["promotion"]) == (True, "v7 promoted")
    (start,) = rec.named("start_run")
    assert start[1] == "serendip-mllm" and start[3]["prompt"]["strategy"] == "text"
    assert rec.named("log_tables")[0][1] == ["clusters", "examples", "item_clusters", "items"]
    curve_steps = [c[2] for c in rec.named("log_metrics") if c[2] is not None]
    assert curve_steps == [2, 4]           # the held-out curve, every eval_every steps
    (reg,) = rec.named("register_model")
    assert reg[1] == out["model_dir"] and reg[2]["match_rate_constrained"] == 1.0
    assert [c[0] for c in rec.calls][-2:] == ["register_model", "promote"]


def test_finetune_stage_without_a_tracker_logs_nothing(synth_dir, tmp_path):
    wd = write_truth_workdir(synth_dir, tmp_path / "wd", PromptConfig("video", 1), n_items=48)
    out = finetune_stage(wd, None, load_config(FinetuneConfig, settings=SETTINGS),
                         run_name="plain", progress=False, device="cpu", nproc=1)
    assert out["model_dir"] == str(wd / "mllm" / "plain")
    assert "registered_version" not in out and not (wd / "mlflow").exists()


def test_ablation_stage_on_a_work_directory(synth_dir, tmp_path):
    wd = write_truth_workdir(synth_dir, tmp_path / "wd", PromptConfig("cot", 2), n_items=48)
    cfg = AblationConfig(groups=("thumbnail",), steps=2, eval_every=2,
                         finetune=load_config(FinetuneConfig, settings=SETTINGS))
    rec = Recorder()
    payload = ablation_stage(wd, None, cfg, progress=False, tracker=rec)
    assert sorted(payload["results"]) == ["cot-1f", "cot-thumbnail"]
    saved = json.loads((wd / "ablation" / "results.json").read_text())
    assert sorted(saved["results"]) == sorted(payload["results"])
    logged = {k.split(".")[0] for c in rec.named("log_metrics") for k in c[1]}
    assert logged == {"cot-1f", "cot-thumbnail"}
    assert any(c[1].endswith("table.md") for c in rec.named("log_artifact"))
