"""Data-parallel fine-tuning for real: two torchrun workers on the CPU (gloo) train the same
model as one process with the whole batch, and rank 0 alone writes the model directory."""

from __future__ import annotations

import pytest
import torch
from mllm_truth import TEST_TINY, write_truth_workdir
from safetensors.torch import load_file

from serendip.config import load_config
from serendip.errors import ConfigError
from serendip.mllm.config import FinetuneConfig
from serendip.mllm.distributed import Context, check_device, resolve_nproc
from serendip.mllm.inference import read_meta
from serendip.mllm.stage import finetune_stage
from serendip.prompts import PromptConfig

SETTINGS = {"steps": 4, "batch_size": 6, "eval_every": 4, "save_every": 4,
            "eval_max_examples": 8, "reasoning_tokens": 12,
            **{f"tiny.{k}": v for k, v in TEST_TINY.items()}}


def test_two_workers_match_one_process(synth_dir, tmp_path):
    wd = write_truth_workdir(synth_dir, tmp_path / "wd", PromptConfig("video", 1), n_items=48)
    cfg = load_config(FinetuneConfig, settings=SETTINGS)
    one = finetune_stage(wd, None, cfg, run_name="one", progress=False, device="cpu", nproc=1)
    two = finetune_stage(wd, None, cfg, run_name="two", progress=False, device="cpu", nproc=2)
    assert read_meta(one["model_dir"])["world_size"] == 1
    assert read_meta(two["model_dir"])["world_size"] == 2
    assert two["metrics"]["step"] == 4 and two["metrics"]["match_rate_constrained"] == 1.0
    a = load_file(f"{one['model_dir']}/model/model.safetensors")
    b = load_file(f"{two['model_dir']}/model/model.safetensors")
    assert a.keys() == b.keys()
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff < 1e-4, f"2-process weights differ from 1-process ones by {diff}"


def test_shards_cover_the_global_batch_and_bad_settings_are_named():
    batch = list(range(10))
    parts = [Context(rank=r, world=3).shard(batch) for r in range(3)]
    assert sorted(sum(parts, [])) == batch and max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ConfigError, match="nproc"):
        resolve_nproc(-1, "auto")
    assert resolve_nproc(0, "cpu") == 1 and resolve_nproc(3, "cpu") == 3
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device"):
            check_device("cuda")
    with pytest.raises(ConfigError, match="device"):
        check_device("tpu")


def test_device_and_process_count_are_run_time_flags_not_settings(tmp_path):
    """device and nproc are arguments of the stage (and CLI flags), not FinetuneConfig fields:
    they do not enter the config, its hash or the run name (issue 13 step 2)."""
    for key in ("device", "nproc"):
        with pytest.raises(ConfigError, match=key):
            load_config(FinetuneConfig, sets=[f"{key}=cpu" if key == "device" else f"{key}=2"])
    with pytest.raises(ConfigError, match="device"):        # checked before any data is read
        finetune_stage(tmp_path / "no-such-workdir", None, FinetuneConfig(), device="tpu")
    with pytest.raises(ConfigError, match="nproc"):
        finetune_stage(tmp_path / "no-such-workdir", None, FinetuneConfig(), nproc=-1)
