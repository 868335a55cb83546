"""Exact top-k by likelihood with the prompt's KV cache reused (serendip.mllm.likelihood):
the scores equal a plain forward over prompt + candidate (no cache), do not depend on which
candidates share the packed trie, restrict answers to each input's candidates, and rank like exhaustive beam
search; bad candidate lists are the caller's error."""

from __future__ import annotations

import pytest
import torch
from mllm_truth import trained_tiny

from serendip.errors import ConfigError, SerendipError
from serendip.mllm.data import collate_generate, split
from serendip.mllm.inference import ClusterPredictor
from serendip.mllm.likelihood import score_candidates


@pytest.fixture(scope="module")
def tiny(synth_dir, tmp_path_factory):
    res, examples, *_ = trained_tiny(synth_dir, tmp_path_factory.mktemp("mllm"))
    test = split(examples, "test")
    prompts = test.column("prompt").to_pylist()[:5]
    images = [x or [] for x in test.column("images").to_pylist()[:5]]
    return res.model_dir, prompts, images


def _reference(p: ClusterPredictor, batch, cand: list[int]) -> torch.Tensor:
    """log p(cand | prompt + marker) per prompt, by one uncached forward each."""
    out = []
    for enc in batch:
        ids = enc.prompt_ids + p.marker + cand
        inputs = collate_generate([enc], p.pad_id, [p.marker + cand])
        with torch.no_grad():
            logits = p.model(**inputs).logits[0].float()
        n = len(cand)
        lp = torch.log_softmax(logits[len(ids) - n - 1:len(ids) - 1], -1)
        out.append(lp.gather(1, torch.tensor(cand)[:, None]).sum())
    return torch.stack(out)


def test_cached_scores_equal_an_uncached_forward_whatever_the_packing(tiny):
    model_dir, prompts, images = tiny
    p = ClusterPredictor.load(model_dir)
    batch = p.encoder.encode_batch(prompts, images)
    inputs = collate_generate(batch, p.pad_id, [p.marker] * len(batch))
    scores = torch.stack(score_candidates(p.model, inputs, p._candidate_ids, pad_id=p.pad_id))
    assert scores.shape == (len(prompts), len(p.descriptions)) and (scores < 0).all()
    for j in (0, 5, len(p.descriptions) - 1):
        ref = _reference(p, batch, p._candidate_ids[j])
        assert torch.allclose(scores[:, j], ref, atol=1e-4), (scores[:, j], ref)
    # each prompt's candidates are packed as one trie: other tries (subsets, another order,
    # a repeated candidate) give every candidate the same score
    subsets = [[j for j in range(len(p.descriptions)) if j % (i + 2) == 0][::-1] + [0]
               for i in range(len(prompts))]
    packed = score_candidates(p.model, inputs, p._candidate_ids, subsets, pad_id=p.pad_id)
    for i, (row, sc) in enumerate(zip(subsets, packed)):
        assert torch.allclose(sc, scores[i, row], atol=1e-4)


def test_top_k_is_exhaustive_beam_search_and_candidates_restrict_answers(tiny):
    model_dir, prompts, images = tiny
    lik = ClusterPredictor.load(model_dir)                       # auto: likelihood for k > 1
    beam = ClusterPredictor.load(model_dir, decoding="beam")
    n = len(lik.descriptions)
    a = lik.predict_prompts(prompts, images, k=n)
    b = beam.predict_prompts(prompts, images, k=n)              # one beam per candidate
    for ra, rb in zip(a, b):
        assert [p.cluster_id for p in ra][:3] == [p.cluster_id for p in rb][:3]
        assert [p.score for p in ra] == sorted((p.score for p in ra), reverse=True)
    subset = [lik.cluster_ids[i::3][:3] for i in range(len(prompts))]
    s = lik.predict_prompts(prompts, images, k=2, candidates=subset)
    for row, allowed, full in zip(s, subset, a):
        assert len(row) == 2 and {p.cluster_id for p in row} <= set(allowed)
        best = max((p for p in full if p.cluster_id in allowed), key=lambda p: p.score)
        assert row[0].cluster_id == best.cluster_id
        assert row[0].score == pytest.approx(best.score, rel=1e-4)
    k_big = lik.predict_prompts(prompts[:1], images[:1], k=10, candidates=[subset[0]])
    assert len(k_big[0]) == len(subset[0])                       # never more than allowed


def test_bad_candidates_and_decoding_are_the_callers_error(tiny):
    model_dir, prompts, images = tiny
    p = ClusterPredictor.load(model_dir)
    with pytest.raises(SerendipError, match="candidates.*not a level-3 cluster"):
        p.predict_prompts(prompts[:1], images[:1], candidates=[["no.such"]])
    with pytest.raises(SerendipError, match="candidates.*2 candidate lists for 1"):
        p.predict_prompts(prompts[:1], images[:1], candidates=[[p.cluster_ids[0]]] * 2)
    with pytest.raises(SerendipError, match="non-empty list"):
        p.predict_prompts(prompts[:1], images[:1], candidates=[[]])
    with pytest.raises(ConfigError, match="constrained"):
        p.predict_prompts(prompts[:1], images[:1], constrained=False,
                          candidates=[[p.cluster_ids[0]]])
    with pytest.raises(ConfigError, match="decoding"):
        ClusterPredictor.load(model_dir, decoding="sampling")
