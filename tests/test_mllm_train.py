"""Fine-tuning the tiny default for real (a few seconds): the loss falls, checkpoints resume to
bit-identical weights, the saved directory reloads to identical outputs, LoRA trains only
what it should and round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mllm_truth import TEST_TINY, trained_tiny, truth_examples
from safetensors.torch import load_file

from serendip.errors import ConfigError
from serendip.mllm.config import FinetuneConfig
from serendip.mllm.data import split
from serendip.mllm.evaluation import evaluate_predictor
from serendip.mllm.inference import ClusterPredictor, read_meta
from serendip.mllm.tiny import TinyVLMConfig
from serendip.mllm.train import finetune
from serendip.prompts import PromptConfig


@pytest.fixture(scope="module")
def trained(synth_dir, tmp_path_factory):
    return trained_tiny(synth_dir, tmp_path_factory.mktemp("mllm"))


def test_loss_falls_and_metrics_are_logged_per_step(trained):
    res, examples, *_ = trained
    losses = [h["train_loss"] for h in res.history]
    assert len(res.history) == 4 and [h["step"] for h in res.history] == [10, 20, 30, 40]
    assert losses[-1] < 0.6 * losses[0]
    for h in res.history:
        assert h["match_rate_constrained"] == 1.0      # the trie: every answer is valid
        for key in ("match_rate", "recall", "recall_constrained"):
            assert 0.0 <= h[key] <= 1.0
    assert res.method == "full" and res.trainable_params == res.total_params


def test_saved_model_is_safetensors_and_reloads_identically(trained, synth_dir):
    res, examples, clusters, *_ = trained
    d = Path(res.model_dir)
    files = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
    assert "model/model.safetensors" in files and "serendip.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pth"))]
    meta = read_meta(d)
    assert meta["kind"] == "full" and meta["level"] == 3
    assert meta["prompt"] == {"strategy": "video", "n_frames": 2, "use_thumbnail": False}
    loaded = ClusterPredictor.load(d)
    again = evaluate_predictor(loaded, split(examples, "test"), 16)
    for key in ("match_rate", "recall", "match_rate_constrained", "recall_constrained"):
        assert again[key] == res.metrics[key]          # same outputs as the in-memory model
    items = [{"title": "x", "context_description": "y",
              "images": split(examples, "test").column("images")[0].as_py()}]
    a = loaded.predict(items, k=3)
    b = ClusterPredictor.load(d).predict(items, k=3)
    assert [(p.cluster_id, p.score) for p in a[0]] == [(p.cluster_id, p.score) for p in b[0]]


def test_resume_replays_the_same_batches(synth_dir, tmp_path):
    prompt = PromptConfig("video", 1)
    examples, clusters, _, items = truth_examples(synth_dir, prompt, n_items=48)
    cfg = FinetuneConfig(steps=16, batch_size=4, eval_every=4, save_every=8,
                         eval_max_examples=4, tiny=TinyVLMConfig(**TEST_TINY))

    straight = finetune(examples, clusters, cfg, tmp_path / "a", prompt_config=prompt,
                        progress=False)

    def crash(step, metrics):
        if step == 12:                                  # after the step-8 checkpoint
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(examples, clusters, cfg, tmp_path / "b", prompt_config=prompt,
                 on_eval=crash, progress=False)
    assert (tmp_path / ".b.work" / "checkpoints" / "step-0000008" / "state.json").exists()
    resumed = finetune(examples, clusters, cfg, tmp_path / "b", prompt_config=prompt,
                       progress=False)
    wa = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [h["step"] for h in resumed.history] == [4, 8, 12, 16]
    assert resumed.metrics == straight.metrics

    changed = FinetuneConfig(**{**cfg.__dict__, "lr": 0.5})
    with pytest.raises(ConfigError, match="another config"):
        finetune(examples, clusters, changed, tmp_path / "b", prompt_config=prompt,
                 progress=False)


def test_lora_on_a_trained_base_trains_adapters_and_round_trips(trained, tmp_path):
    res, examples, clusters, *_ = trained
    cfg = FinetuneConfig(base_model=str(res.model_dir), steps=6, batch_size=8, eval_every=6,
                         eval_max_examples=8, lora_r=4)
    assert cfg.resolved_method() == "lora"
    out = finetune(examples, clusters, cfg, tmp_path / "lora",
                   prompt_config=PromptConfig("video", 2), progress=False)
    assert out.method == "lora" and 0 < out.trainable_params < out.total_params
    d = Path(out.model_dir)
    adapter = load_file(str(d / "adapter" / "adapter_model.safetensors"))
    names = list(adapter)
    assert any("lora_A" in n and "language_model" in n for n in names)
    assert not any("vision_tower" in n and "lora" in n for n in names)   # vision not adapted
    assert any("lm_head" in n for n in names)                           # modules_to_save
    assert any("multi_modal_projector" in n for n in names)
    assert (d / "base" / "model.safetensors").exists()                  # self-contained
    loaded = ClusterPredictor.load(d)
    again = evaluate_predictor(loaded, split(examples, "test"), 8)
    assert again["recall_constrained"] == out.metrics["recall_constrained"]
    assert again["match_rate_constrained"] == 1.0


def test_config_and_data_errors(trained, tmp_path):
    _, examples, clusters, *_ = trained
    with pytest.raises(ConfigError, match="method"):
        FinetuneConfig(method="qlora").check()
    with pytest.raises(ConfigError, match="strategy"):
        finetune(examples, clusters, FinetuneConfig(steps=1), tmp_path / "x",
                 prompt_config=PromptConfig("cot", 2), progress=False)
    with pytest.raises(ConfigError, match="local model directory"):
        finetune(examples, clusters, FinetuneConfig(steps=1, base_model="llava-hf/llava-1.5"),
                 tmp_path / "y", prompt_config=PromptConfig("video", 2), progress=False)


def test_any_local_hf_vlm_directory_is_a_lora_base(trained, tmp_path):
    """A plain save_pretrained directory (model + processor) loads through the Auto classes."""
    from serendip.mllm.tiny import build_tiny_vlm, tokenizer_corpus

    _, examples, clusters, *_ = trained
    descs = clusters.column("description").to_pylist()
    model, processor = build_tiny_vlm(tokenizer_corpus(["a title"], descs),
                                      TinyVLMConfig(**TEST_TINY))
    hf_dir = tmp_path / "hf-vlm"
    model.save_pretrained(hf_dir)
    processor.save_pretrained(hf_dir)
    cfg = FinetuneConfig(base_model=str(hf_dir), steps=2, batch_size=4, eval_every=2,
                         eval_max_examples=4)
    out = finetune(examples, clusters, cfg, tmp_path / "run",
                   prompt_config=PromptConfig("video", 2), progress=False)
    assert out.method == "lora" and out.metrics["match_rate_constrained"] == 1.0
    meta = read_meta(out.model_dir)
    assert meta["kind"] == "adapter" and meta["base_model"] == "bundled"
    assert ClusterPredictor.load(out.model_dir).predict(
        [{"title": "t", "context_description": "d",
          "images": split(examples, "test").column("images")[0].as_py()}], k=2)[0]


def test_batched_encoding_equals_one_by_one(trained):
    res, examples, *_ = trained
    encoder = ClusterPredictor.load(res.model_dir).encoder
    test = split(examples, "test")
    images = test.column("images").to_pylist()[:5]
    prompts = [p + " more" * i for i, p in enumerate(test.column("prompt").to_pylist()[:5])]
    for many, p, im in zip(encoder.encode_batch(prompts, images), prompts, images):
        one = encoder.encode(p, im)
        assert many.prompt_ids == one.prompt_ids and many.extra_token == one.extra_token
        assert many.vision.keys() == one.vision.keys()
        assert all(torch.equal(many.vision[k], one.vision[k]) for k in one.vision)
