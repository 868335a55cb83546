"""Cluster-choice baselines on training logs only, the held-out cases (all serendipitous pairs
of held-out contexts), intervals, and top-k recall over the candidates."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from serendip.candidates import CandidateIndex
from serendip.errors import ConfigError, SerendipError
from serendip.evaluation.baselines import (
    ChoiceCases,
    curated_cases,
    evaluate_baselines,
    heldout_cases,
    random_sibling_hits,
    ranking_hits,
    retriever_rankings,
    split_transitions,
    transition_rankings,
    weighted_recall,
)
from serendip.metrics import recall_at_k_over_candidates
from tests.synth_tree import synth_tree


@pytest.fixture(scope="module")
def platform(synth_dir):
    return synth_tree(synth_dir)


def test_split_is_by_context_item_and_statistics_use_training_only(platform):
    _, inter, clusters, ic = platform
    train, held, held_ctx = split_transitions(inter, 0.2, 0)
    assert train.num_rows + held.num_rows == inter.num_rows
    assert set(held.column("context_item_id").to_pylist()) == held_ctx
    assert not held_ctx & set(train.column("context_item_id").to_pylist())
    # the curated split's test contexts are held out too (same hash split)
    from serendip.curation import CurationConfig, curate

    items = platform[0]
    sel = curate(items, inter, clusters, ic, CurationConfig(seed=0)).selected
    test_ctx = set(sel.filter(pa.compute.equal(sel.column("split"), "test"))
                   .column("context_item_id").to_pylist())
    assert test_ctx <= held_ctx


def test_transition_ranking_matches_pandas_and_only_names_candidates(platform):
    _, inter, clusters, ic = platform
    index = CandidateIndex.build(ic, clusters, 3, 1)
    train, held, _ = split_transitions(inter, 0.2, 0)
    ctxs = sorted(set(held.column("context_item_id").to_pylist()))
    ranks = transition_rankings(train, index, ctxs)
    # independent reference: pandas group-by of satisfaction flowing own cluster → cluster
    c3 = ic.to_pandas().set_index("item_id").c3
    df = train.to_pandas()
    df["a"], df["b"] = df.context_item_id.map(c3), df.next_item_id.map(c3)
    flow = df.groupby(["a", "b"]).satisfaction.sum()
    for ctx in ctxs:
        cands = index.candidates([ctx])[0]
        r = ranks[ctx]
        assert sorted(r) == cands                          # exactly the candidates, ranked
        own = c3[ctx]
        assert own not in r
        scores = [flow.get((own, b), 0.0) for b in r]
        assert scores == sorted(scores, reverse=True)
        assert r[0] in [b for b in cands if flow.get((own, b), 0.0) == max(scores)]


def test_random_sibling_expectation_is_mean_inverse_candidates(platform):
    _, inter, clusters, ic = platform
    index = CandidateIndex.build(ic, clusters, 3, 1)
    _, held, _ = split_transitions(inter, 0.2, 0)
    cases = heldout_cases(held, ic, index)
    assert len(cases) > 200                                  # all pairs, not a top-10 sample
    assert index.is_candidate(cases.context_ids, cases.labels).all()
    h = random_sibling_hits(cases, index, 1)
    assert np.allclose(h, 1.0 / index.n_candidates(cases.context_ids))
    h2 = random_sibling_hits(cases, index, 2)
    n = index.n_candidates(cases.context_ids)
    assert np.allclose(h2, np.minimum(2, n) / n)


class _FakeRetriever:
    """Scores fixed per item; ranks the whole catalogue like Retriever.retrieve_batch."""

    def __init__(self, scores: dict[str, float]):
        self.item_ids = list(scores)
        self.scores = scores

    def retrieve_batch(self, histories, cluster_ids, k, exclude_seen=True):
        out = []
        for h in histories:
            ranked = sorted(((i, s) for i, s in self.scores.items() if i not in set(h)),
                            key=lambda x: -x[1])
            out.append(ranked[:k])
        return out


def test_retriever_ranks_candidates_by_their_best_item(platform):
    _, _, clusters, ic = platform
    index = CandidateIndex.build(ic, clusters, 3, 1)
    items = ic.column("item_id").to_pylist()
    ctx = next(i for i in items if len(index.candidates([i])[0]) >= 2)
    cands = index.candidates([ctx])[0]
    c3 = dict(zip(items, ic.column("c3").to_pylist()))
    rng = np.random.default_rng(0)
    scores = {i: float(rng.normal()) for i in items}
    best = max(cands, key=lambda c: max(scores[i] for i in items if c3[i] == c))
    for i in items:                      # make one candidate win only through its max
        if c3[i] == cands[-1]:
            scores[i] = -5.0
    scores[next(i for i in items if c3[i] == cands[-1])] = 10.0
    r = retriever_rankings(_FakeRetriever(scores), index, [ctx])[ctx]
    assert r[0] == cands[-1] and sorted(r) == cands and best in r
    r_sum = retriever_rankings(_FakeRetriever(scores), index, [ctx], agg="mean")[ctx]
    assert r_sum[0] != cands[-1] or len(cands) == 1
    with pytest.raises(ConfigError):
        retriever_rankings(_FakeRetriever(scores), index, [ctx], agg="median")


def test_weighted_recall_interval_and_paired_difference():
    cases = ChoiceCases([f"c{i % 50}" for i in range(500)], ["x"] * 500,
                        np.linspace(0.2, 1.0, 500))
    ones, zeros = np.ones(500), np.zeros(500)
    r = weighted_recall(ones, cases, reference=zeros)
    assert r["value"] == 1.0 and r["ci95"] == [1.0, 1.0]
    assert r["diff"] == 1.0 and r["diff_ci95"] == [1.0, 1.0]
    half = (np.arange(500) % 2).astype(float)
    r = weighted_recall(half, cases, n_boot=400)
    w = cases.weights
    assert r["value"] == pytest.approx((w * half).sum() / w.sum())
    assert r["ci95"][0] <= r["value"] <= r["ci95"][1]
    with pytest.raises(SerendipError):
        weighted_recall(np.zeros(0), ChoiceCases([], [], np.zeros(0)))


def test_top_k_recall_over_candidates_drops_own_cluster_and_non_siblings():
    ranked = [["own", "a", "b"], ["z", "b", "a"], [None, "own"]]
    cands = [["a", "b"], ["a", "b"], ["a", "b"]]
    assert recall_at_k_over_candidates(ranked, ["a", "a", "a"], cands, 1) == pytest.approx(1 / 3)
    assert recall_at_k_over_candidates(ranked, ["a", "a", "a"], cands, 2) == pytest.approx(2 / 3)
    with pytest.raises(SerendipError):
        recall_at_k_over_candidates(ranked, ["a"], cands, 1)
    # the baselines' hit function agrees with the metric on candidate rankings
    cases = ChoiceCases(["c1", "c2"], ["b", "a"], np.ones(2))
    rk = {"c1": ["a", "b"], "c2": ["b", "a"]}
    for k in (1, 2):
        assert ranking_hits(rk, cases, k).mean() == recall_at_k_over_candidates(
            [rk["c1"], rk["c2"]], ["b", "a"], [["a", "b"]] * 2, k)


def test_evaluate_baselines_reports_both_case_sets_and_the_best(platform):
    items, inter, clusters, ic = platform
    from serendip.curation import CurationConfig, curate

    sel = curate(items, inter, clusters, ic, CurationConfig(seed=0)).selected
    perfect = {}                              # a "model" that knows the held-out labels
    _, held, _ = split_transitions(inter, 0.2, 0)
    index = CandidateIndex.build(ic, clusters, 3, 1)
    cases = heldout_cases(held, ic, index)
    lab = pd.Series(cases.labels).groupby(pd.Series(cases.context_ids)).agg(
        lambda s: s.value_counts().index[0])
    for c, lbl in lab.items():
        perfect[c] = [lbl] + [x for x in index.candidates([c])[0] if x != lbl]
    rep = evaluate_baselines(inter, ic, clusters, 3, 1, curated=sel, model_rankings=perfect,
                             n_boot=200)
    allp, cur = rep["case_sets"]
    assert allp["n_cases"] > 5 * cur["n_cases"]
    assert allp["weighted"] and not cur["weighted"]
    for cs in (allp, cur):
        assert set(cs["methods"]) == {"random_sibling", "transition", "model"}
        assert cs["best_baseline"] in ("random_sibling", "transition")
        m = cs["methods"]["model"]["recall"]
        assert m["ci95"][0] <= m["value"] <= m["ci95"][1]
        assert "diff_ci95" in m
    assert allp["methods"]["model"]["recall"]["diff_ci95"][0] > 0     # a real lift shows
    assert curated_cases(sel).name.startswith("curated")


class _Pred:
    """A stand-in ClusterPredictor: answers the context's own cluster first, then clusters in
    id order (so the candidates filter has work to do)."""

    def __init__(self, ic, clusters):
        from serendip.prompts import PromptConfig

        self.level, self.model_version = 3, "fake-1"
        self.prompt_config = PromptConfig(strategy="text")
        self.own = dict(zip(ic.column("item_id").to_pylist(), ic.column("c3").to_pylist()))
        self.by_desc = {}
        self.level3 = sorted(c for c, lv in zip(clusters.column("cluster_id").to_pylist(),
                                                clusters.column("level").to_pylist()) if lv == 3)
        self.calls = 0

    def predict(self, inputs, k=1, constrained=True):
        from types import SimpleNamespace

        self.calls += len(inputs)
        return [[SimpleNamespace(cluster_id=c) for c in self.level3[:k]] for _ in inputs]


def test_baselines_stage_on_a_workdir_compares_the_model(platform, tmp_path):
    from serendip.curation import CurationConfig, curate_stage
    from serendip.data.io import write_table
    from serendip.evaluation.baselines import baselines_stage

    items, inter, clusters, ic = platform
    write_table(tmp_path, "items", items)
    write_table(tmp_path, "interactions", inter, refs={"items": items})
    write_table(tmp_path, "clusters", clusters)
    write_table(tmp_path, "item_clusters", ic, refs={"items": items})
    curate_stage(tmp_path, tmp_path, CurationConfig(seed=0))
    pred = _Pred(ic, clusters)
    rep = baselines_stage(tmp_path, predictor=pred, ks=(1, 2), n_boot=100)
    assert pred.calls > 0 and rep["model"]["model_versions"] == ["fake-1"]
    allp, cur = rep["case_sets"]
    for cs in (allp, cur):
        assert "model" in cs["methods"] and "diff_ci95" in cs["methods"]["model"]["recall"]
    assert "| model |" in rep["markdown"]


class _CandPred(_Pred):
    """Like _Pred, but ranks exactly the candidates it is given (reversed id order)."""

    def predict(self, inputs, k=1, constrained=True, candidates=None):
        from types import SimpleNamespace

        assert candidates is not None and len(candidates) == len(inputs)
        self.seen = candidates
        self.calls += len(inputs)
        return [[SimpleNamespace(cluster_id=c) for c in sorted(cs, reverse=True)[:k]]
                for cs in candidates]


def test_a_predictor_that_takes_candidates_ranks_exactly_them(platform, tmp_path):
    from serendip.evaluation.rankings import mllm_cluster_rankings

    items, inter, clusters, ic = platform
    from serendip.data.io import write_table

    write_table(tmp_path, "items", items)
    write_table(tmp_path, "clusters", clusters)
    write_table(tmp_path, "item_clusters", ic, refs={"items": items})
    index = CandidateIndex.build(ic, clusters, 3, 1)
    ctx = ic.column("item_id").to_pylist()[:40]
    pred = _CandPred(ic, clusters)
    ranks, stats = mllm_cluster_rankings(tmp_path, ctx, index, pred, k=10, use_scored=False)
    assert stats["ranked_over_candidates"] and stats["non_candidate_answers_dropped"] == 0
    for c in ctx:
        assert ranks[c] == sorted(index.candidates([c])[0], reverse=True)
    assert stats["top1_is_own_cluster"] == 0


def test_baselines_stage_ranks_the_retriever_sibling_from_a_separate_artifact(platform,
                                                                              tmp_path):
    """KFP passes the retriever as its own artifact (not ``<workdir>/retriever``): with
    ``retriever_dir`` the retriever-ranked sibling is among the baselines the gate compares
    with; without a retriever it is not."""
    from serendip.curation import CurationConfig, curate_stage
    from serendip.data.io import write_table
    from serendip.evaluation.baselines import baselines_stage
    from serendip.retriever import RetrieverConfig, train_retriever

    items, inter, clusters, ic = platform
    wd = tmp_path / "wd"
    write_table(wd, "items", items)
    write_table(wd, "interactions", inter, refs={"items": items})
    write_table(wd, "clusters", clusters)
    write_table(wd, "item_clusters", ic, refs={"items": items})
    curate_stage(wd, wd, CurationConfig(seed=0))
    art = tmp_path / "artifact" / "retriever"
    train_retriever(inter, ic, RetrieverConfig(epochs=1, dim=16, torchscript=False), art,
                    progress=False)
    without = baselines_stage(wd, ks=(1,), n_boot=50)
    assert "retriever" not in without["case_sets"][0]["methods"]
    rep = baselines_stage(wd, ks=(1,), n_boot=50, retriever_dir=art)
    assert "retriever" in rep["case_sets"][0]["methods"]
    assert "| retriever |" in rep["markdown"]
