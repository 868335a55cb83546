import math

import numpy as np
import pytest

from serendip.evaluation import beyond
from serendip.evaluation.online_sim import ThompsonClusterBandit
from serendip.evaluation.truth import GroundTruth


def _emb():
    e = {"a": [1, 0], "b": [0, 1], "c": [1, 0], "d": [math.sqrt(.5), math.sqrt(.5)]}
    return {k: np.asarray(v, dtype=float) for k, v in e.items()}


def test_catalog_coverage():
    assert beyond.catalog_coverage([["a", "b"], ["b", "c"]], 10) == 0.3


def test_novelty_is_minus_log2_user_share():
    nov = beyond.historical_item_novelty({"a": 4, "b": 1}, n_users=8)
    assert nov == {"a": 1.0, "b": 3.0}
    assert beyond.novelty([["a", "b"]], nov) == 2.0


def test_intra_list_diversity():
    emb = _emb()
    assert beyond.intra_list_diversity([["a", "c"]], emb) == pytest.approx(0.0)
    assert beyond.intra_list_diversity([["a", "b"]], emb) == pytest.approx(1.0)


def test_serendipity_needs_relevant_and_unexpected():
    emb = _emb()
    # b is orthogonal to the history (unexpected) and relevant; c equals the history
    s = beyond.serendipity([["b", "c"]], [["a"]], [[1.0, 1.0]], emb)
    assert s == pytest.approx(0.5)
    assert beyond.serendipity([["b"]], [["a"]], [[0.0]], emb) == 0.0


def test_cluster_serendipity_follows_the_paper_definition():
    paths = {"x": ("1", "1.0", "1.0.0", "1.0.0.0"), "sib": ("1", "1.0", "1.0.1", "1.0.1.0"),
             "same": ("1", "1.0", "1.0.0", "1.0.0.1"), "far": ("2", "2.0", "2.0.0", "2.0.0.0")}
    assert beyond.cluster_serendipity([["sib", "same", "far", "sib"]], ["x"], paths, 3, 1) == 0.5


def test_novel_impression_ratio():
    out = beyond.novel_impression_ratio({"m1": [["a", "b"]], "m2": [["b", "c", "d"]]})
    assert out == {"m1": 0.5, "m2": pytest.approx(2 / 3)}


def test_thompson_bandit_learns_the_rewarding_sibling():
    paths = {f"i{k}": ("1", "1.0", f"1.0.{k % 3}", f"1.0.{k % 3}.0") for k in range(9)}
    bandit = ThompsonClusterBandit(paths, level=3, delta=1, seed=0)
    for _ in range(300):
        arm = bandit.choose("i0")            # context in 1.0.0; siblings 1.0.1, 1.0.2
        assert arm in ("1.0.1", "1.0.2")
        bandit.update("i0", arm, [0.9] if arm == "1.0.2" else [0.1])
    picks = [bandit.choose("i0") for _ in range(100)]
    assert picks.count("1.0.2") > 80


def test_ground_truth_oracle_ranks_bridge_above_non_bridge(synth_dir):
    import pyarrow.parquet as pq
    gt = GroundTruth.load(synth_dir)
    topics = pq.read_table(synth_dir / "truth" / "item_topics.parquet").to_pandas()
    ui = pq.read_table(synth_dir / "truth" / "user_interests.parquet").to_pandas()
    row = ui[ui.affinity].iloc[0]
    ctx = topics[topics.leaf == row.leaf].item_id.iloc[0]
    bridge = gt.bridge_l3(ctx)
    own_l3 = int(topics[topics.item_id == ctx].l3.iloc[0])
    l2 = int(topics[topics.item_id == ctx].l2.iloc[0])
    in_bridge = topics[topics.l3 == bridge].item_id.iloc[0]
    other = topics[(topics.l2 == l2) & (topics.l3 != bridge) & (topics.l3 != own_l3)].item_id.iloc[0]
    s = gt.expected([row.user_id] * 2, [ctx] * 2, [in_bridge, other])
    assert s[0] == pytest.approx(0.9) and s[1] < 0.5
