"""The transition prior (serendip.transitions): curation fits it on the training contexts only
and writes it; the fine-tuned model carries it and ranks its answers by log-likelihood +
prior_weight · log prior (logit adjustment), in every path that calls ``predict``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mllm_truth import trained_tiny, write_truth_workdir
from serving_fixtures import unscored_items

from serendip.errors import ConfigError
from serendip.transitions import PRIOR_FILE, TransitionPrior


def test_log_prior_is_a_smoothed_distribution_over_the_candidates():
    p = TransitionPrior(3, {"a": {"b": 9.0, "c": 1.0}}, {"b": 10.0, "c": 5.0, "d": 5.0})
    lp = p.log_prior("a", ["b", "c", "d"])
    assert np.isclose(np.exp(lp).sum(), 1.0)
    assert lp[0] > lp[1] > lp[2]                       # logged flow first, then smoothing only
    # an unknown own cluster: the inflow shares alone; nothing logged: uniform
    assert np.allclose(np.exp(p.log_prior("zz", ["b", "c", "d"])), [0.5, 0.25, 0.25])
    assert np.allclose(np.exp(TransitionPrior(3).log_prior("a", ["x", "y"])), [0.5, 0.5])
    # more smoothing pulls towards the inflow shares
    assert np.exp(p.log_prior("a", ["b", "c", "d"], smoothing=1e6))[2] == pytest.approx(0.25,
                                                                                      abs=1e-3)
    assert p.ranking("a", ["d", "c", "b"]) == ["b", "c", "d"]
    with pytest.raises(ConfigError, match="smoothing"):
        p.log_prior("a", ["b"], smoothing=0)


@pytest.mark.parametrize("doc", [None, {"format": 99}, {"format": 1, "flows": {"a": 3}},
                                 {"format": 1, "flows": {"a": {"b": -1}}}])
def test_a_malformed_prior_is_refused_with_the_fix(doc):
    with pytest.raises(ConfigError, match="transition_prior|transition prior|flow") as e:
        TransitionPrior.from_json(doc, "x.json")
    assert "re-run serendip curate" in str(e.value)


def test_curation_writes_the_prior_of_the_training_contexts_only(synth_dir, tmp_path):
    from serendip.candidates import CandidateIndex
    from serendip.curation import CurationConfig, curate_stage
    from serendip.data.io import read_table
    from serendip.evaluation.baselines import split_transitions
    from serendip.prompts import PromptConfig

    wd = write_truth_workdir(synth_dir, tmp_path / "wd", PromptConfig("text"))
    cfg = CurationConfig(level=3, delta=2, prompt=PromptConfig("text"))
    res = curate_stage(wd, wd, cfg)
    saved = TransitionPrior.from_json(json.loads((wd / PRIOR_FILE).read_text()))
    assert saved.to_json() == res.prior.to_json() and saved.flows
    items = read_table(wd, "items", columns=["item_id"])
    inter = read_table(wd, "interactions", refs={"items": items})
    ic, cl = read_table(wd, "item_clusters"), read_table(wd, "clusters")
    train, held, held_ctx = split_transitions(inter, cfg.test_fraction, cfg.seed)
    assert held.num_rows > 0
    index = CandidateIndex.build(ic, cl, 3, 2)
    expect = TransitionPrior.fit(train, index)
    assert saved.flows.keys() == expect.flows.keys()
    for a, row in expect.flows.items():
        assert saved.flows[a] == pytest.approx(row)
    everything = TransitionPrior.fit(inter, index)     # held-out transitions would change it
    assert everything.flows != expect.flows
    # only candidates (serendipitous flows) are kept: never the own cluster
    assert all(a not in row for a, row in saved.flows.items())


def test_the_model_ranks_by_likelihood_plus_the_weighted_prior_and_keeps_it(synth_dir,
                                                                            tmp_path):
    from serendip.mllm.data import split
    from serendip.mllm.inference import ClusterPredictor

    res, examples, *_ = trained_tiny(synth_dir, tmp_path)
    test = split(examples, "test")
    prompts = test.column("prompt").to_pylist()[:4]
    images = [x or [] for x in test.column("images").to_pylist()[:4]]
    p = ClusterPredictor.load(res.model_dir)
    assert p.prior is None                        # trained without a curation prior
    cands = [p.cluster_ids[:4]] * len(prompts)
    plain = p.predict_prompts(prompts, images, k=4, candidates=cands,
                              context_clusters=["own"] * len(prompts))
    # a prior that puts (almost) all mass on the model's last choice, for context cluster "own"
    last = [ps[-1].cluster_id for ps in plain]
    flows = {"own": {c: (1e6 if c == last[0] else 0.0) for c in p.cluster_ids[:4]}}
    p.prior = TransitionPrior(p.level, flows, {})
    p.prior_weight = 0.0
    same = p.predict_prompts(prompts, images, k=4, candidates=cands,
                             context_clusters=["own"] * len(prompts))
    assert [[x.cluster_id for x in r] for r in same] == [[x.cluster_id for x in r] for r in plain]
    p.prior_weight = 5.0
    adj = p.predict_prompts(prompts, images, k=4, candidates=cands,
                            context_clusters=["own"] * len(prompts))
    assert [r[0].cluster_id for r in adj] == [last[0]] * len(prompts)
    # the score is still the model's own likelihood of that answer
    lik = {x.cluster_id: x.score for x in plain[0]}
    assert adj[0][0].score == pytest.approx(lik[last[0]], rel=1e-5)
    # no own cluster: no adjustment for that input
    none = p.predict_prompts(prompts[:1], images[:1], k=4, candidates=cands[:1],
                             context_clusters=[None])
    assert [x.cluster_id for x in none[0]] == [x.cluster_id for x in plain[0]]
    # saved and loaded: the same prior, weight and answers
    out = p.save(tmp_path / "with-prior")
    q = ClusterPredictor.load(out)
    assert q.prior.to_json() == p.prior.to_json() and q.prior_weight == 5.0
    again = q.predict_prompts(prompts, images, k=4, candidates=cands,
                              context_clusters=["own"] * len(prompts))
    assert [[x.cluster_id for x in r] for r in again] == [[x.cluster_id for x in r] for r in adj]


def test_the_served_model_ranks_with_the_curations_prior(served_wd, mllm_handler):
    """The serving path (the v2 ``mllm`` handler, as Triton and KServe call it) answers with the
    curation's prior applied: its ranking of a catalogue item's candidates is the model's
    log-likelihood + prior_weight · log prior; without CONTEXT_DESCRIPTION it is the model's
    alone."""
    from serendip.platform.serving.lookup import ItemCatalog
    from serendip.serving.infer_requests import mllm_request

    p = mllm_handler.predictor
    assert p.adjusts and p.prior_weight == 1.0          # curation wrote it, finetune kept it
    saved = TransitionPrior.from_json(json.loads((served_wd / PRIOR_FILE).read_text()))
    assert saved.to_json() == p.prior.to_json()
    catalog = ItemCatalog(served_wd)
    by_desc = {d: c for c, d in zip(p.cluster_ids, p.descriptions)}
    changed = 0
    for item in unscored_items(served_wd)[:12]:
        info = catalog(item)
        cands = list(info["candidates"])
        req = mllm_request(info)
        req["K"] = np.array([[len(cands)]], np.int32)
        got = [c.decode() for c in mllm_handler.infer([req])[0]["CLUSTER_IDS"][0] if c]
        x = {"title": info["title"], "context_description": info["context_description"],
             "thumbnail": info.get("thumbnail"), "frames": info.get("frames")}
        lik = {q.cluster_id: np.log(q.score) for q in p.predict([x], k=len(cands),
                                                                candidates=[cands])[0]}
        own = by_desc[info["context_description"]]
        prior = dict(zip(cands, p.prior.log_prior(own, cands)))
        want = sorted(cands, key=lambda c: -(lik[c] + p.prior_weight * prior[c]))
        assert got[0] == want[0]
        alone = max(lik, key=lik.get)
        changed += alone != want[0]
        req.pop("CONTEXT_DESCRIPTION")
        plain = [c.decode() for c in mllm_handler.infer([req])[0]["CLUSTER_IDS"][0] if c]
        assert plain[0] == alone
    assert changed > 0                                  # the prior does change answers here



def test_another_prior_weight_re_saves_the_trained_model_without_training(synth_dir, tmp_path):
    """prior_weight only re-ranks answers: a re-run with another weight resumes the finished
    checkpoint (no training step), and the saved model's version changes with the weight (the
    same weights answer differently, so caches keyed by version must not mix them)."""
    import dataclasses

    from mllm_truth import TEST_TINY, truth_examples

    from serendip.mllm.checkpoints import config_key
    from serendip.mllm.config import FinetuneConfig
    from serendip.mllm.inference import ClusterPredictor, read_meta
    from serendip.mllm.stage import run_name_for
    from serendip.mllm.tiny import TinyVLMConfig
    from serendip.mllm.train import finetune
    from serendip.prompts import PromptConfig

    prompt = PromptConfig("text")
    examples, clusters, _, items = truth_examples(synth_dir, prompt, n_items=48)
    level3 = [c for c, lv in zip(clusters.column("cluster_id").to_pylist(),
                                 clusters.column("level").to_pylist()) if lv == 3]
    prior = TransitionPrior(3, {level3[0]: {level3[1]: 5.0}}, {level3[1]: 5.0})
    cfg = FinetuneConfig(steps=6, batch_size=8, eval_every=6, save_every=6,
                         eval_max_examples=4, tiny=TinyVLMConfig(**TEST_TINY))
    other = dataclasses.replace(cfg, prior_weight=4.0)
    assert run_name_for(cfg, prompt) == run_name_for(other, prompt)
    assert config_key(cfg) == config_key(other)
    out = tmp_path / "m"
    first = finetune(examples, clusters, cfg, out, prompt_config=prompt, items=items,
                     progress=False, prior=prior)
    v1 = read_meta(out)["model_version"]
    again = finetune(examples, clusters, other, out, prompt_config=prompt, items=items,
                     progress=False, prior=prior)
    assert again.history == first.history                # resumed at the end: no new step
    p = ClusterPredictor.load(out)
    assert p.prior_weight == 4.0 and p.prior.to_json() == prior.to_json()
    assert read_meta(out)["model_version"] != v1
