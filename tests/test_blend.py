"""The blended slate (paper §4: the MLLM's candidates are added to production, not
substituted): share kept, sources labelled, no duplicates, short lists, deterministic."""

import numpy as np
import pytest

from serendip.blend import EXPLOIT, SERENDIPITOUS, BlendConfig, blend_slate, slate_ids
from serendip.errors import ConfigError


def _lists(n_e=20, n_s=20):
    return [f"e{i}" for i in range(n_e)], [f"s{i}" for i in range(n_s)]


def test_default_share_is_two_of_ten_and_sources_are_labelled():
    exploit, ser = _lists()
    slate = blend_slate(exploit, ser)
    assert len(slate) == 10
    assert [s.source for s in slate].count(SERENDIPITOUS) == 2
    for s in slate:
        assert s.source == (SERENDIPITOUS if s.item_id.startswith("s") else EXPLOIT)
    # each source's items keep their own order and come from its head
    assert [s.item_id for s in slate if s.source == EXPLOIT] == exploit[:8]
    assert [s.item_id for s in slate if s.source == SERENDIPITOUS] == ser[:2]
    assert slate[0].item_id == "e0"                     # the head stays exploitation's top item
    assert [i for i, s in enumerate(slate) if s.source == SERENDIPITOUS] == [4, 9]


@pytest.mark.parametrize("k,share", [(10, 0.0), (10, 0.1), (10, 0.25), (10, 0.5), (7, 0.3),
                                     (1, 0.2), (3, 1.0), (10, 1.0)])
def test_share_is_kept_at_every_setting(k, share):
    exploit, ser = _lists()
    slate = blend_slate(exploit, ser, BlendConfig(k=k, serendipitous_share=share))
    n_s = sum(s.source == SERENDIPITOUS for s in slate)
    assert len(slate) == k
    assert n_s == int(np.ceil(share * k - 1e-9))        # at least share · k, the least such
    assert n_s >= share * k - 1e-9


def test_no_duplicates_and_overlap_counts_as_serendipitous():
    exploit = ["a", "b", "c", "d", "a", "e", "f", "g", "h", "i", "j", "k"]
    ser = ["c", "c", "x"]
    slate = blend_slate(exploit, ser, BlendConfig(k=10, serendipitous_share=0.2))
    ids = slate_ids(slate)
    assert len(ids) == len(set(ids)) == 10
    assert {s.item_id for s in slate if s.source == SERENDIPITOUS} == {"c", "x"}
    assert [s.rank for s in slate if s.source == SERENDIPITOUS] == [0, 2]


def test_short_lists_fill_from_the_other_source_never_pad():
    exploit, ser = _lists(n_e=3, n_s=20)
    slate = blend_slate(exploit, ser)                       # exploitation short: more s
    assert len(slate) == 10 and sum(s.source == EXPLOIT for s in slate) == 3
    exploit, ser = _lists(n_e=20, n_s=1)
    slate = blend_slate(exploit, ser)                       # serendipitous short: smaller share
    assert len(slate) == 10 and sum(s.source == SERENDIPITOUS for s in slate) == 1
    assert blend_slate([], [], BlendConfig(k=5)) == []
    slate = blend_slate(["a", "b"], ["a"], BlendConfig(k=5))  # fewer distinct items than k
    assert slate_ids(slate) == ["b", "a"]                    # "a" is the cluster's pick
    assert len(slate) == 2


def test_deterministic_and_pure():
    exploit, ser = _lists()
    a = blend_slate(exploit, ser, BlendConfig(k=10, serendipitous_share=0.3))
    b = blend_slate(list(exploit), list(ser), BlendConfig(k=10, serendipitous_share=0.3))
    assert a == b
    assert exploit == [f"e{i}" for i in range(20)]          # inputs untouched


@pytest.mark.parametrize("kw,field", [({"k": 0}, "k"), ({"k": 2.5}, "k"),
                                      ({"serendipitous_share": -0.1}, "serendipitous_share"),
                                      ({"serendipitous_share": 1.5}, "serendipitous_share"),
                                      ({"serendipitous_share": float("nan")},
                                       "serendipitous_share"),
                                      ({"serendipitous_share": "0.2"}, "serendipitous_share")])
def test_bad_settings_name_the_field(kw, field):
    with pytest.raises(ConfigError) as e:
        BlendConfig(**kw)
    assert e.value.field == field


# ------------------------------------------------------------------ online simulation wiring
class _Retriever:
    def __init__(self, clusters):
        self.clusters = clusters            # item → level-3 cluster

    def retrieve(self, history, cluster, k):
        items = [i for i in sorted(self.clusters) if cluster is None or self.clusters[i] == cluster]
        return [(i, 1.0) for i in items if i not in history][:k]


class _Truth:
    def expected(self, users, contexts, items):
        return np.full(len(items), 0.6)


def _sim_world():
    import pyarrow as pa

    paths = {f"i{j}": ("A", f"A{j % 2}", f"A{j % 2}{j % 4 // 2}", f"L{j}") for j in range(40)}
    clusters = {i: p[2] for i, p in paths.items()}
    rng = np.random.default_rng(0)
    emb = {i: v / np.linalg.norm(v) for i, v in zip(paths, rng.normal(size=(40, 8)))}
    rows = [(f"u{u}", f"i{(u + t) % 40}", f"i{(u + t + 1) % 40}", 0.5, u * 100 + t)
            for u in range(12) for t in range(6)]
    inter = pa.table({"user_id": [r[0] for r in rows], "context_item_id": [r[1] for r in rows],
                      "next_item_id": [r[2] for r in rows], "satisfaction": [r[3] for r in rows],
                      "ts": pa.array([r[4] for r in rows], pa.timestamp("s"))})
    # ours: the sibling of each item's level-3 cluster under the same level-2 parent
    ours = {i: p[1] + ("1" if p[2].endswith("0") else "0") for i, p in paths.items()}
    return paths, clusters, emb, inter, ours


def test_online_simulation_includes_the_blend_and_keeps_the_others_ratios():
    from serendip.evaluation.online_sim import OnlineSimConfig, run_online_sim
    from serendip.evaluation.recommenders import make_recommender_factory

    paths, clusters, emb, inter, ours = _sim_world()
    factory = make_recommender_factory(".", _Retriever(clusters), _Truth(), paths, emb, ours, 3, 1)
    recs = factory(0)
    assert "blend" in recs
    slate = recs["blend"]("u0", ["i0"], "i0", 10)
    assert len(slate) == 10 and len(set(slate)) == 10
    assert sum(clusters[i] == ours["i0"] for i in slate) >= 2     # the share from ours' cluster
    cfg = OnlineSimConfig(n_contexts=20, k=10, seeds=(0,), level=3, delta=1)
    with_blend = run_online_sim(factory, inter, _Truth(), paths, emb, 40, cfg, progress=False)

    def without(seed):
        r = factory(seed)
        r.pop("blend")
        return r

    plain = run_online_sim(without, inter, _Truth(), paths, emb, 40, cfg, progress=False)
    for arm in ("exploitation", "exploration", "serendip"):   # the blend does not steal novelty
        assert with_blend.per_seed[arm]["novel_impression_ratio"] == \
            plain.per_seed[arm]["novel_impression_ratio"]
    assert with_blend.per_seed["blend"]["novel_impression_ratio"][0] > 0
