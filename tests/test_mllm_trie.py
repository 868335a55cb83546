"""Controlled generation: the trie admits only whole candidates, and a (random, untrained) model
decoding under it only ever answers valid descriptions — greedy, beam top-k and CoT."""

from __future__ import annotations

import pytest
import torch

from serendip.errors import ConfigError
from serendip.mllm.inference import ClusterPredictor
from serendip.mllm.tiny import TinyVLMConfig, build_tiny_vlm, tokenizer_corpus
from serendip.mllm.trie import ReasoningProcessor, TokenTrie, TrieLogitsProcessor, candidate_trie
from serendip.prompts import PromptConfig

DESCRIPTIONS = ["sports > football > tricks", "sports > football > history",
                "sports > tennis > gear", "music > piano > tutorials", "music > drums > tricks",
                "cooking > baking > challenges"]
IDS = [f"{i // 3}.{i % 3}.0" for i in range(len(DESCRIPTIONS))]
TINY = TinyVLMConfig(text_hidden=64, text_intermediate=128, vision_hidden=32, vision_layers=1,
                     text_layers=1, vocab_size=400)


def test_trie_walk_and_lookup():
    trie = TokenTrie([[1, 2, 9], [1, 3, 9], [4, 9]])
    assert trie.walk([1]).allowed().tolist() == [2, 3]
    assert trie.root.allowed().tolist() == [1, 4]
    assert trie.lookup([1, 3, 9]) == 1
    assert trie.lookup([1, 3]) is None            # not complete
    assert trie.walk([1, 5]) is None              # off the trie
    assert trie.max_len == 3


def test_trie_rejects_duplicates_and_prefixes():
    with pytest.raises(ConfigError, match="tokenize identically"):
        TokenTrie([[1, 2], [1, 2]])
    with pytest.raises(ConfigError, match="prefix"):
        TokenTrie([[1, 2], [1, 2, 3]])
    with pytest.raises(ConfigError):
        TokenTrie([])


def test_logits_processor_masks_to_trie():
    trie = TokenTrie([[5, 6, 2], [5, 7, 2], [8, 2]])
    proc = TrieLogitsProcessor(trie, start=2, fallback=0)
    ids = torch.tensor([[1, 1, 5], [1, 1, 8], [1, 1, 9]])   # prompt len 2, then 1 generated
    scores = torch.zeros(3, 10)
    out = proc(ids, scores)
    allowed = [torch.isfinite(r).nonzero().flatten().tolist() for r in out]
    assert allowed == [[6, 7], [2], [0]]           # off-trie row may only pad (never all -inf)


def test_reasoning_processor_forces_the_marker_in_time():
    marker = [7, 8]
    proc = ReasoningProcessor(marker, start=1, budget=5, eos=2)
    scores = torch.zeros(1, 10)
    free = proc(torch.tensor([[0, 3]]), scores)    # 1 generated, 4 left: free but no EOS
    assert free[0, 2] == float("-inf") and torch.isfinite(free[0, 3])
    forced = proc(torch.tensor([[0, 3, 4]]), scores)   # 3 left <= len(marker)+1: force it
    assert torch.isfinite(forced[0]).nonzero().flatten().tolist() == [7]
    cont = proc(torch.tensor([[0, 3, 4, 7]]), scores)
    assert torch.isfinite(cont[0]).nonzero().flatten().tolist() == [8]
    done = proc(torch.tensor([[0, 3, 7, 8]]), scores)
    assert torch.isfinite(done[0]).nonzero().flatten().tolist() == [2]
    assert proc.marker_end([3, 7, 8, 5]) == 3


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(0)
    texts = tokenizer_corpus(["a title", "another clip"], DESCRIPTIONS)
    return build_tiny_vlm(texts, TINY)


def _inputs(n: int):
    return [{"title": f"clip {i}", "context_description": DESCRIPTIONS[i % len(DESCRIPTIONS)],
             "images": [f"synth:{i % 4}.{40 * i % 360}.{i % 3}.0.1.{i}#f{j}" for j in range(8)]}
            for i in range(n)]


@pytest.mark.parametrize("strategy", ["video", "cot", "text"])
def test_untrained_model_only_answers_valid_descriptions(random_model, strategy):
    model, processor = random_model
    pred = ClusterPredictor(model, processor, IDS, DESCRIPTIONS, PromptConfig(strategy, 2), 3,
                            image_size=64, reasoning_tokens=8, batch_size=4)
    inputs = _inputs(6)
    top1 = pred.predict(inputs, k=1)
    assert all(len(p) == 1 for p in top1)
    for ps in top1:
        assert ps[0].description in DESCRIPTIONS
        assert ps[0].cluster_id == IDS[DESCRIPTIONS.index(ps[0].description)]
        assert 0.0 < ps[0].score <= 1.0
    topk = pred.predict(inputs, k=3)
    for ps in topk:
        assert len(ps) == 3                          # k distinct beams = k distinct clusters
        assert len({p.cluster_id for p in ps}) == 3
        assert all(p.description in DESCRIPTIONS for p in ps)
        assert [p.score for p in ps] == sorted((p.score for p in ps), reverse=True)
    if strategy == "cot":
        assert all(ps[0].reasoning is not None for ps in top1)
    # free generation of a random model: answers are whatever it spells (mostly invalid)
    free = pred.predict(inputs[:2], k=1, constrained=False)
    assert all(p[0].cluster_id is None or p[0].description in DESCRIPTIONS for p in free)


def test_batching_does_not_change_answers(random_model):
    model, processor = random_model
    kwargs = dict(image_size=64, reasoning_tokens=8)
    one = ClusterPredictor(model, processor, IDS, DESCRIPTIONS, PromptConfig("video", 2), 3,
                           batch_size=1, **kwargs)
    many = ClusterPredictor(model, processor, IDS, DESCRIPTIONS, PromptConfig("video", 2), 3,
                            batch_size=5, **kwargs)
    inputs = _inputs(5)
    a = [p[0].cluster_id for p in one.predict(inputs, k=2)]
    b = [p[0].cluster_id for p in many.predict(inputs, k=2)]
    assert a == b


def test_trie_is_cached_per_tokenizer(random_model):
    _, processor = random_model
    t1, seqs = candidate_trie(processor.tokenizer, DESCRIPTIONS)
    t2, _ = candidate_trie(processor.tokenizer, DESCRIPTIONS)
    assert t1 is t2
    assert all(s[-1] == processor.tokenizer.eos_token_id for s in seqs)
    assert [t1.lookup(s) for s in seqs] == list(range(len(DESCRIPTIONS)))


def test_predictor_rejects_bad_candidates(random_model):
    model, processor = random_model
    with pytest.raises(ConfigError, match="unique"):
        ClusterPredictor(model, processor, ["a", "b"], ["x", "x"], PromptConfig("video", 2), 3)
