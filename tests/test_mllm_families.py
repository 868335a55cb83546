""""Any Hugging Face VLM": tiny random-weight models of four families, built from configs and
saved to a directory, each taken through the whole path — LoRA fine-tune (2 steps) → trie-
constrained predict (greedy and by likelihood) → export to the Triton model repository → the
``mllm`` model handler. Families: LLaVA (ViT tower), Qwen2-VL (M-RoPE, ``mm_token_type_ids``,
a processor with a video slot), Idefics3 (5-D pixel values, pixel attention mask) and FastVLM
(a CNN tower whose feature map becomes tokens — the pretrained base's architecture)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from mllm_truth import truth_examples

from serendip.mllm.config import FinetuneConfig
from serendip.mllm.data import split
from serendip.mllm.inference import ClusterPredictor
from serendip.mllm.train import finetune
from serendip.prompts import PromptConfig

FAMILIES = ("llava", "qwen2_vl", "idefics3", "fast_vlm")
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=False)


def _tokenizer(corpus: list[str], specials: list[str], extra: dict | None = None):
    """Byte-level BPE trained on ``corpus`` with pad/bos/eos + the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<s>", "</s>"] + specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", extra_special_tokens=extra or {})


def _ids(tok) -> dict:
    c = tok.convert_tokens_to_ids
    return dict(pad_token_id=c("<pad>"), bos_token_id=c("<s>"), eos_token_id=c("</s>"))


def build_llava(corpus):
    from serendip.mllm.tiny import TinyVLMConfig, build_model, build_processor, train_tokenizer

    cfg = TinyVLMConfig(text_hidden=64, text_intermediate=128, vision_hidden=32,
                        vision_layers=1, vocab_size=600)
    tok = train_tokenizer(corpus, cfg.vocab_size)
    return build_model(tok, cfg), build_processor(tok, cfg)


def build_qwen2_vl(corpus):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from serendip.mllm.loading import image_only_processor_class

    tok = _tokenizer(corpus, ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                              "<|video_pad|>"],
                     {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
    c = tok.convert_tokens_to_ids
    # M-RoPE: mrope_section must sum to head_dim / 2 (64 / 4 heads = 16 → 8)
    text = dict(TEXT, vocab_size=len(tok), **_ids(tok),
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [2, 3, 3]})
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=c("<|image_pad|>"), video_token_id=c("<|video_pad|>"),
        vision_start_token_id=c("<|vision_start|>"), vision_end_token_id=c("<|vision_end|>"))
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    ip = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=56 * 56)   # 4 tokens per image
    return model, image_only_processor_class(Qwen2VLProcessor)(image_processor=ip, tokenizer=tok)


def build_idefics3(corpus):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tok = _tokenizer(corpus, ["<fake_token_around_image>", "<image>", "<global-img>",
                              "<end_of_utterance>"])
    config = Idefics3Config(
        text_config=dict(TEXT, model_type="llama", vocab_size=len(tok), **_ids(tok)),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8),
        scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"),
        pad_token_id=_ids(tok)["pad_token_id"])
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config)
    ip = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": 32},
                                   max_image_size={"longest_edge": 32})
    # (32 / 8)^2 patches / scale_factor^2 = 4 image tokens
    return model, Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4)


def build_fast_vlm(corpus):
    from transformers import (
        EfficientNetConfig,
        FastVlmConfig,
        FastVlmForConditionalGeneration,
        LlamaConfig,
        LlavaProcessor,
    )
    from transformers.models.clip import CLIPImageProcessorPil

    from serendip.mllm.tiny import train_tokenizer

    tok = train_tokenizer(corpus, 600)
    vision = EfficientNetConfig(image_size=64, width_coefficient=0.25, depth_coefficient=0.2,
                                hidden_dim=320, num_channels=3)   # = round_filters(1280)
    vision.hidden_size = vision.hidden_dim
    text = LlamaConfig(vocab_size=len(tok), **TEXT, **_ids(tok))
    image_id = tok.convert_tokens_to_ids("<image>")
    config = FastVlmConfig(vision_config=vision, text_config=text, image_token_index=image_id,
                           image_seq_length=4)                   # 64 px / stride 32 → 2 × 2
    torch.manual_seed(0)
    model = FastVlmForConditionalGeneration(config)
    ip = CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=32,
                          vision_feature_select_strategy="full", image_token="<image>",
                          num_additional_image_tokens=0)
    return model, proc


@pytest.fixture(scope="module")
def data(synth_dir):
    prompt = PromptConfig("video", 2)
    examples, clusters, _, items = truth_examples(synth_dir, prompt, n_items=16)
    from serendip.mllm.data import example_targets, level_clusters, target_level
    from serendip.mllm.tiny import tokenizer_corpus

    _, descriptions = level_clusters(clusters, target_level(examples, clusters))
    corpus = tokenizer_corpus(examples.column("prompt").to_pylist(),
                              descriptions + example_targets(examples, prompt))
    return prompt, examples, clusters, items, corpus


@pytest.mark.parametrize("family", FAMILIES)
def test_family_finetune_predict_export_serve(family, data, synth_dir, tmp_path):
    from serendip.serving.handlers import MllmHandler
    from serendip.serving.infer_requests import mllm_request
    from serendip.serving.repository import ExportSource, export_model

    prompt, examples, clusters, items, corpus = data
    model, processor = globals()[f"build_{family}"](corpus)
    base = tmp_path / "base"
    model.save_pretrained(base)
    processor.save_pretrained(base)

    cfg = FinetuneConfig(base_model=str(base), steps=2, batch_size=4, eval_every=2,
                         save_every=2, eval_max_examples=4, eval_batch_size=4, lr=1e-3)
    res = finetune(examples, clusters, cfg, tmp_path / "mllm", prompt_config=prompt,
                   progress=False)
    assert res.method == "lora" and 0 < res.trainable_params < res.total_params
    assert res.metrics["match_rate_constrained"] == 1.0

    valid = set(clusters.filter(clusters.column("level").to_numpy() == 3)
                .column("cluster_id").to_pylist())
    test = split(examples, "test")
    prompts = test.column("prompt").to_pylist()[:3]
    images = [x or [] for x in test.column("images").to_pylist()[:3]]
    greedy = ClusterPredictor.load(res.model_dir, decoding="beam")
    lik = ClusterPredictor.load(res.model_dir, decoding="likelihood")
    g = greedy.predict_prompts(prompts, images, k=1)
    every = lik.predict_prompts(prompts, images, k=len(valid))
    beams = greedy.predict_prompts(prompts, images, k=3)
    for gr, ev, bm in zip(g, every, beams):
        assert gr[0].cluster_id in valid
        assert sorted(p.cluster_id for p in ev) == sorted(valid)      # every candidate, once
        # the likelihood of the greedy answer is the greedy decoder's own score
        score = {p.cluster_id: p.score for p in ev}
        assert score[gr[0].cluster_id] == pytest.approx(gr[0].score, rel=1e-3)
        for p in bm:                       # beam scores are likelihoods of the same sequences
            assert score[p.cluster_id] == pytest.approx(p.score, rel=1e-3)
        assert ev[0].score >= max(p.score for p in bm) * (1 - 1e-4)    # the exact top-1

    repo = export_model(ExportSource("mllm", Path(res.model_dir), 1), tmp_path / "repo")
    handler = MllmHandler.load(repo / "1" / "weights", batch_size=2)
    item = items.to_pylist()[0]
    request = mllm_request({"title": item["title"], "context_description": "x",
                            "frames": item["frames"], "thumbnail": item["thumbnail"]})
    request["K"] = torch.tensor([[2]], dtype=torch.int32).numpy()
    out = handler.infer([request])[0]
    answered = [c.decode() for c in out["CLUSTER_IDS"][0]]
    assert len(answered) == 2 and set(answered) <= valid
    shutil.rmtree(tmp_path / "repo")


def test_image_only_processor_round_trips(tmp_path, data):
    """A processor with a video slot cannot be built or saved without torchvision; its
    image-only subclass does both and reloads by name in a fresh registry lookup."""
    from transformers import Qwen2VLProcessor

    from serendip.mllm import loading

    *_, corpus = data
    _, proc = build_qwen2_vl(corpus)
    with pytest.raises((AttributeError, TypeError, ValueError)):
        Qwen2VLProcessor(image_processor=proc.image_processor, tokenizer=proc.tokenizer,
                         video_processor=None)
    proc.save_pretrained(tmp_path)
    loading._IMAGE_ONLY_CLASSES.clear()       # as in a new process: found by the saved name
    again = loading.load_processor(tmp_path)
    assert type(again).__name__ == "ImageOnlyQwen2VLProcessor"
    text = loading.format_prompt(again, "Watch the video.", 1)
    from PIL import Image

    enc = again(text=[text], images=[Image.new("RGB", (64, 64))], return_tensors="pt")
    assert "mm_token_type_ids" in enc and int(enc["mm_token_type_ids"].sum()) == 4


def test_frozen_cnn_tower_keeps_its_batchnorm_statistics(data):
    """LoRA leaves the vision tower frozen; training mode must not update a CNN tower's
    BatchNorm running statistics (nor drop its blocks): ``model.train()`` alone did."""
    from serendip.mllm.trainable import apply_lora, train_mode

    *_, corpus = data
    model, _ = build_fast_vlm(corpus)
    peft_model = apply_lora(model, FinetuneConfig(base_model="x"))
    bn = model.model.vision_tower.embeddings.batchnorm
    before = bn.running_mean.clone()
    train_mode(peft_model)
    assert peft_model.training and not bn.training
    model.model.vision_tower(torch.rand(2, 3, 64, 64))
    assert torch.equal(bn.running_mean, before)
    peft_model.train()                                  # what training did before
    model.model.vision_tower(torch.rand(2, 3, 64, 64))
    assert not torch.equal(bn.running_mean, before)


def test_chain_of_thought_on_the_thumbnail_with_a_cnn_tower(synth_dir, data, tmp_path):
    """CoT + thumbnail through a FastVLM-style base: the reasoning is generated first, then
    the answer is constrained (greedy) or ranked by likelihood after it — same scores."""
    *_, corpus = data
    prompt = PromptConfig("cot", 1, use_thumbnail=True)
    examples, clusters, _, _ = truth_examples(synth_dir, prompt, n_items=16)
    model, processor = build_fast_vlm(corpus)
    base = tmp_path / "base"
    model.save_pretrained(base)
    processor.save_pretrained(base)
    cfg = FinetuneConfig(base_model=str(base), steps=2, batch_size=4, eval_every=2,
                         save_every=2, eval_max_examples=4, eval_batch_size=4,
                         reasoning_tokens=10)
    res = finetune(examples, clusters, cfg, tmp_path / "mllm", prompt_config=prompt,
                   progress=False)
    assert res.metrics["match_rate_constrained"] == 1.0
    test = split(examples, "test")
    prompts = test.column("prompt").to_pylist()[:2]
    images = [x or [] for x in test.column("images").to_pylist()[:2]]
    assert all(len(x) == 1 and x[0].endswith("#thumb") for x in images)
    greedy = ClusterPredictor.load(res.model_dir, decoding="beam").predict_prompts(
        prompts, images, k=1)
    ranked = ClusterPredictor.load(res.model_dir, decoding="likelihood").predict_prompts(
        prompts, images, k=12)
    for g, r in zip(greedy, ranked):
        assert g[0].reasoning is not None and g[0].reasoning == r[0].reasoning
        score = {p.cluster_id: p.score for p in r}
        assert score[g[0].cluster_id] == pytest.approx(g[0].score, rel=1e-3)


def test_bf16_mixed_precision_trains_and_saves_float32(data, tmp_path):
    """precision=bf16 autocasts the training step (what ``auto`` does on a bf16 GPU); the
    weights, and so the saved model, stay float32."""
    import math

    from safetensors.torch import load_file

    from serendip.errors import ConfigError

    prompt, examples, clusters, *_ = data
    with pytest.raises(ConfigError, match="precision"):
        FinetuneConfig(precision="fp8").check()
    assert FinetuneConfig().autocast_dtype(torch.device("cpu")) is None
    assert FinetuneConfig(precision="bf16").autocast_dtype(torch.device("cpu")) == torch.bfloat16
    from mllm_truth import TEST_TINY

    from serendip.mllm.tiny import TinyVLMConfig

    cfg = FinetuneConfig(steps=2, batch_size=4, eval_every=2, save_every=2, precision="bf16",
                         eval_max_examples=4, tiny=TinyVLMConfig(**TEST_TINY))
    res = finetune(examples, clusters, cfg, tmp_path / "m", prompt_config=prompt,
                   progress=False)
    assert math.isfinite(res.history[-1]["train_loss"])
    weights = load_file(str(Path(res.model_dir) / "model" / "model.safetensors"))
    assert {w.dtype for w in weights.values()} == {torch.float32}
