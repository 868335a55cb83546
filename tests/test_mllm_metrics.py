"""Offline metrics and baselines on hand-made cases."""

from __future__ import annotations

import pyarrow as pa
import pytest

from serendip.errors import SerendipError
from serendip.metrics import match_rate, recall, recall_at_k
from serendip.mllm.evaluation import baselines

DESCS = ["a > x", "a > y", "b > z"]


def test_match_rate_counts_exact_descriptions():
    assert match_rate(["a > x", "a > y ", "nonsense", None], DESCS) == 0.5
    assert match_rate(["a > x"], DESCS) == 1.0
    assert match_rate(["A > X"], DESCS) == 0.0          # exact, case-sensitive


def test_recall_against_labels():
    assert recall(["a > x", "a > y", "b > z", None], ["a > x", "b > z", "b > z", "a > x"]) == 0.5
    with pytest.raises(SerendipError, match="labels"):
        recall(["a > x"], ["a > x", "a > y"])
    with pytest.raises(SerendipError, match="no answers"):
        recall([], [])


def test_recall_at_k():
    ranked = [["a > x", "a > y"], ["b > z", None], ["a > y", "a > x"]]
    assert recall_at_k(ranked, ["a > y", "a > x", "b > z"]) == pytest.approx(1 / 3)


def _tables():
    # level 2 under two parents: "0" has 0.0, 0.1, 0.2 ; "1" has 1.0, 1.1
    rows = [("0", 1, None), ("1", 1, None), ("0.0", 2, "0"), ("0.1", 2, "0"), ("0.2", 2, "0"),
            ("1.0", 2, "1"), ("1.1", 2, "1")]
    clusters = pa.table({"cluster_id": [r[0] for r in rows], "level": [r[1] for r in rows],
                         "parent_id": [r[2] for r in rows],
                         "description": [f"d{r[0]}" for r in rows],
                         "size": [1] * len(rows), "traffic": [1] * len(rows)})
    item_clusters = pa.table({"item_id": ["i1", "i2", "i3", "i4"],
                              "c1": ["0", "0", "1", "1"], "c2": ["0.0", "0.1", "1.0", "1.1"],
                              "c3": ["x"] * 4, "c4": ["x"] * 4})
    examples = pa.table({
        "context_item_id": ["i1", "i2", "i1", "i3", "i1", "i2", "i3", "i4"],
        "target_cluster_id": ["0.1", "0.1", "0.2", "1.1", "0.1", "0.0", "1.1", "0.0"],
        "split": ["train", "train", "train", "train", "test", "test", "test", "test"]})
    return clusters, item_clusters, examples


def test_baselines_by_hand():
    clusters, item_clusters, examples = _tables()
    b = baselines(examples, item_clusters, clusters, level=2, delta=1)
    # most frequent train target: 0.1 (2x) -> test labels 0.1, 0.0, 1.1, 0.0 -> 1/4
    assert b["most_frequent"]["cluster_id"] == "0.1"
    assert b["most_frequent"]["recall"] == pytest.approx(0.25)
    # siblings: i1 (0.0) -> {0.1, 0.2}: label 0.1 -> 1/2 ; i2 (0.1) -> {0.0, 0.2}: 0.0 -> 1/2
    #           i3 (1.0) -> {1.1}: 1.1 -> 1 ; i4 (1.1) -> {1.0}: label 0.0 not a sibling -> 0
    assert b["random_sibling"]["recall"] == pytest.approx((0.5 + 0.5 + 1 + 0) / 4)
    assert b["random_sibling"]["mean_siblings"] == pytest.approx(1.5)


def test_baselines_need_held_out_rows():
    clusters, item_clusters, examples = _tables()
    train_only = examples.filter(pa.compute.equal(examples.column("split"), "train"))
    with pytest.raises(SerendipError, match="held-out"):
        baselines(train_only, item_clusters, clusters, level=2)
