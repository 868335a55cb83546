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
