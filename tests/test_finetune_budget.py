"""The fine-tune compute budget (``FinetuneConfig.time_budget_s``): training stops once its
steps have used the budget's CPU seconds, evaluated and saved at the step it stopped, so
models can be compared under the same compute (benchmarks/bench_world_knowledge.py)."""

from __future__ import annotations

import itertools

import pytest
from mllm_truth import TEST_TINY, truth_examples

import serendip.mllm.train as train_mod
from serendip.errors import ConfigError
from serendip.mllm.config import FinetuneConfig
from serendip.mllm.inference import read_meta
from serendip.mllm.tiny import TinyVLMConfig
from serendip.mllm.train import finetune
from serendip.prompts import PromptConfig


def test_budget_stops_training_evaluates_and_saves(synth_dir, tmp_path, monkeypatch):
    prompt = PromptConfig("video", 1)
    examples, clusters, _, _ = truth_examples(synth_dir, prompt, n_items=48)
    cfg = FinetuneConfig(steps=16, batch_size=4, eval_every=5, save_every=8,
                         eval_max_examples=4, time_budget_s=3.5,
                         tiny=TinyVLMConfig(**TEST_TINY))
    # a deterministic CPU clock: every reading advances one second, so each step (read at its
    # start and end) costs exactly 1 s of the budget (no timing in the test)
    clock = itertools.count()
    monkeypatch.setattr(train_mod.time, "process_time", lambda: float(next(clock)))
    res = finetune(examples, clusters, cfg, tmp_path / "m", prompt_config=prompt,
                   progress=False)
    assert [h["step"] for h in res.history] == [4]          # over budget after step 4 of 16
    assert res.history[-1]["train_cpu_s"] == 4.0
    assert res.metrics["step"] == 4 and 0.0 <= res.metrics["recall_constrained"] <= 1.0
    assert read_meta(res.model_dir)["metrics"]["step"] == 4
    assert (tmp_path / ".m.work" / "checkpoints" / "step-0000004" / "state.json").exists()


def test_no_budget_runs_every_step_and_negative_budget_is_refused(synth_dir, tmp_path):
    prompt = PromptConfig("video", 1)
    examples, clusters, _, _ = truth_examples(synth_dir, prompt, n_items=48)
    cfg = FinetuneConfig(steps=6, batch_size=4, eval_every=3, save_every=6,
                         eval_max_examples=4, tiny=TinyVLMConfig(**TEST_TINY))
    res = finetune(examples, clusters, cfg, tmp_path / "m", prompt_config=prompt,
                   progress=False)
    assert [h["step"] for h in res.history] == [3, 6]
    assert res.history[-1]["train_cpu_s"] > 0
    with pytest.raises(ConfigError, match="time_budget_s"):
        FinetuneConfig(time_budget_s=-1).check()
