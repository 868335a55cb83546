"""Batched likelihood scoring (serendip.mllm.likelihood) equals scoring one item at a time.

One batch mixes prompts of very different lengths (left padding), candidate sets of 1 to all
candidates (tries of different sizes, padding nodes), a one-token candidate (no trie node), and
prompts that share a text prefix before their images (encoded once, its cache repeated). Every
score must equal a plain uncached forward over that prompt alone + the candidate, and the
predictor's batched top-1 must be its per-item top-1 — for the tiny default (LLaVA family, ViT
tower), a tiny random FastVLM (CNN tower: the pretrained base's architecture), Idefics3 (5-D
pixel values) and Qwen2-VL (M-RoPE: the prompt is encoded whole, positions from rope_deltas). A padding,
position or mask bug in any of the three forwards changes the scores of the padded rows.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from PIL import Image
from test_mllm_families import build_fast_vlm, build_idefics3, build_qwen2_vl

from serendip.mllm.data import Encoded, Encoder, collate_generate, marker_ids
from serendip.mllm.inference import ClusterPredictor
from serendip.mllm.likelihood import _mrope_owner, _shared_prefix_len, score_candidates
from serendip.mllm.loading import _image_placeholder, tokenizer_of
from serendip.mllm.trie import candidate_trie
from serendip.prompts import PromptConfig

WORDS = ("river stone garden bicycle piano comet lantern harbor violin meadow orbit canyon "
         "falcon ember glacier").split()
DESCRIPTIONS = ["sports > football > tricks", "sports > football > history",
                "sports > tennis > gear", "music > piano > lessons", "music > violin",
                "travel > cities > harbor nights", "travel > mountains"]
# a chat template with a system turn: every prompt starts with the same text, then its images
TEMPLATE = ("{{ 'system: you recommend interest clusters to viewers.\n' }}"
            "{% for m in messages %}user: {% for c in m['content'] %}"
            "{% if c['type'] == 'image' %}IMAGE{% else %}{{ c['text'] }}{% endif %}"
            "{% endfor %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
FAMILIES = {"llava": None, "fast_vlm": build_fast_vlm, "idefics3": build_idefics3,
            "qwen2_vl": build_qwen2_vl}


def _prompts(n: int) -> list[str]:
    rng = random.Random(3)
    return [f"Title: {' '.join(rng.choices(WORDS, k=1 + 7 * (i % 3) + i))}. Suggest a cluster."
            for i in range(n)]


def _images(n: int, size: int = 64) -> list[list[Image.Image]]:
    g = torch.Generator().manual_seed(0)
    return [[Image.fromarray((torch.rand(size, size, 3, generator=g) * 255).byte().numpy())]
            for _ in range(n)]


def _build(family: str):
    corpus = _prompts(12) + DESCRIPTIONS + [TEMPLATE, "system user assistant Answer:"]
    if family == "llava":
        from serendip.mllm.tiny import TinyVLMConfig, build_model, build_processor, train_tokenizer

        cfg = TinyVLMConfig(text_hidden=64, text_intermediate=128, vision_hidden=32,
                            vision_layers=1, vocab_size=600)
        tok = train_tokenizer(corpus, cfg.vocab_size)
        torch.manual_seed(0)
        model, processor = build_model(tok, cfg), build_processor(tok, cfg)
    else:
        model, processor = FAMILIES[family](corpus)
    processor.chat_template = TEMPLATE.replace("IMAGE", _image_placeholder(processor))
    return model.eval(), processor


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    return _build(request.param)


def _candidates(processor) -> tuple[list[list[int]], list[list[int]]]:
    """Candidate ids (the trie's sequences + a one-token candidate) and per-prompt subsets of
    mixed sizes, in mixed orders."""
    tok = tokenizer_of(processor)
    _, cands = candidate_trie(tok, DESCRIPTIONS)
    cands = [list(c) for c in cands] + [[tok.eos_token_id]]
    n = len(cands)
    pairs = [list(range(n)), [2], [5, 0, 3], [n - 1, 1], list(range(n))[::-1], [4, 6]]
    return cands, pairs


def _reference(model, enc: Encoded, marker: list[int], pad_id: int, cand: list[int]) -> float:
    """log p(cand | prompt + marker) by one uncached forward over this prompt alone."""
    inputs = collate_generate([enc], pad_id, [marker + cand])
    with torch.no_grad():
        logits = model(**inputs).logits[0].float()
    n = len(cand)
    lp = torch.log_softmax(logits[-n - 1:-1], -1)
    return float(lp.gather(1, torch.tensor(cand)[:, None]).sum())


def test_batched_scores_equal_one_uncached_forward_per_prompt_and_candidate(family):
    model, processor = family
    tok = tokenizer_of(processor)
    enc = Encoder(processor)
    prompts = _prompts(6)
    batch = [enc.encode(p, im) for p, im in zip(prompts, _images(6))]
    assert len({len(e.prompt_ids) for e in batch}) >= 4            # real left padding
    marker = marker_ids(tok)
    cands, pairs = _candidates(processor)
    inputs = collate_generate(batch, tok.pad_token_id, [marker] * len(batch))
    if _mrope_owner(model) is None:                  # M-RoPE (Qwen2-VL): encoded whole
        assert _shared_prefix_len(model, inputs, None) >= 8        # the system turn is shared
    shared = score_candidates(model, inputs, cands, pairs, pad_id=tok.pad_token_id)
    whole = score_candidates(model, inputs, cands, pairs, pad_id=tok.pad_token_id,
                             share_prefix=False)
    for i, (e, row) in enumerate(zip(batch, pairs)):
        ref = torch.tensor([_reference(model, e, marker, tok.pad_token_id, cands[j])
                            for j in row])
        assert shared[i].shape == ref.shape and (shared[i] < 0).all()
        assert torch.allclose(shared[i], ref, atol=2e-4), (i, shared[i], ref)
        assert torch.allclose(whole[i], ref, atol=2e-4), (i, whole[i], ref)
        assert int(shared[i].argmax()) == int(ref.argmax())
        # the same prompt scored alone (no padding, no other rows) gives the same scores
        alone = score_candidates(model, collate_generate([e], tok.pad_token_id, [marker]),
                                 cands, [row], pad_id=tok.pad_token_id)[0]
        assert torch.allclose(shared[i], alone, atol=2e-4)


def test_predictor_batched_top1_and_scores_equal_per_item(family):
    model, processor = family
    p = ClusterPredictor(model, processor, [f"c{i}" for i in range(len(DESCRIPTIONS))],
                         DESCRIPTIONS, PromptConfig("multimodal", 1), level=3, batch_size=6)
    prompts, images = _prompts(6), _images(6)
    ids = p.cluster_ids
    candidates = [ids, [ids[2]], [ids[5], ids[0], ids[3]], [ids[6], ids[1]], ids[::-1],
                  [ids[4], ids[6]]]
    batched = p.predict_prompts(prompts, images, k=3, candidates=candidates)
    p.batch_size = 1
    single = [p.predict_prompts([q], [im], k=3, candidates=[c])[0]
              for q, im, c in zip(prompts, images, candidates)]
    for b, s, allowed in zip(batched, single, candidates):
        assert [x.cluster_id for x in b] == [x.cluster_id for x in s]
        assert {x.cluster_id for x in b} <= set(allowed) and len(b) == min(3, len(allowed))
        for x, y in zip(b, s):          # scores are probabilities (~1e-19): compare logs
            assert math.log(x.score) == pytest.approx(math.log(y.score), abs=2e-4)
