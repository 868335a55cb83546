import json

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from serendip.config import load_config
from serendip.curation import (
    CurationConfig,
    build_examples,
    curate,
    serendipitous_pairs,
    split_by_context,
)
from serendip.data.io import read_table
from serendip.data.schemas import validate
from serendip.errors import ConfigError, SchemaError
from serendip.prompts import PromptConfig
from tests.synth_tree import synth_tree


@pytest.fixture(scope="module")
def platform(synth_dir):
    return synth_tree(synth_dir)


def _frame(platform):
    items, inter, clusters, ic = platform
    c = ic.to_pandas().set_index("item_id")
    df = inter.to_pandas()
    for lvl in range(1, 5):
        df[f"ctx{lvl}"] = df.context_item_id.map(c[f"c{lvl}"])
        df[f"nxt{lvl}"] = df.next_item_id.map(c[f"c{lvl}"])
    return df


def test_every_serendipitous_pair_satisfies_the_definition(platform):
    items, inter, clusters, ic = platform
    df = _frame(platform)
    c = ic.to_pandas().set_index("item_id")
    for level, delta in ((3, 1), (4, 2), (2, 2)):
        pairs = serendipitous_pairs(inter, ic, level, delta).to_pandas()
        assert len(pairs) > 0
        for row in pairs.itertuples():
            a, b = c.loc[row.context_item_id], c.loc[row.next_item_id]
            assert a[f"c{level}"] != b[f"c{level}"]
            if level - delta >= 1:
                assert a[f"c{level - delta}"] == b[f"c{level - delta}"]
            assert row.context_cluster_id == a[f"c{level}"]
            assert row.next_cluster_id == b[f"c{level}"]
        # and nothing is missed: the same count as an independent pandas filter
        expect = (df[f"ctx{level}"] != df[f"nxt{level}"])
        if level - delta >= 1:
            expect &= df[f"ctx{level - delta}"] == df[f"nxt{level - delta}"]
        assert len(pairs) == int(expect.sum())


def test_diversified_curation_keeps_the_top_k_per_cluster(platform):
    items, inter, clusters, ic = platform
    cfg = CurationConfig(level=3, delta=1, top_k=10)
    res = curate(items, inter, clusters, ic, cfg)
    sel = res.selected.to_pandas()
    df = _frame(platform)
    ser = df[(df.ctx3 != df.nxt3) & (df.ctx2 == df.nxt2)]
    agg = ser.groupby(["context_item_id", "nxt3"]).satisfaction.mean()
    per_cluster = sel.groupby("target_cluster_id").size()
    assert per_cluster.max() <= 10
    level3 = set(clusters.filter(pc.equal(clusters.column("level"), 3))
                 .column("cluster_id").to_pylist())
    assert set(per_cluster.index) <= level3
    for row in sel.itertuples():
        # a logged serendipitous pair, with its mean satisfaction
        assert agg.loc[(row.context_item_id, row.target_cluster_id)] == pytest.approx(
            row.satisfaction)
    for cluster, group in sel.groupby("target_cluster_id"):
        cand = agg.xs(cluster, level="nxt3")
        # exactly the top-k by mean satisfaction (no unselected item scores higher)
        assert len(group) == min(10, len(cand))
        rest = cand.drop(group.context_item_id)
        if len(rest):
            assert rest.max() <= group.satisfaction.min() + 1e-12
    # clusters get equal shares where the logs allow it
    assert (per_cluster == 10).mean() >= 0.5


def test_serendipitous_pairs_beat_similar_pairs_on_the_synthetic_platform(platform):
    items, inter, clusters, ic = platform
    stats = curate(items, inter, clusters, ic, CurationConfig()).stats
    sim, ser = stats["pairs"]["similar"], stats["pairs"]["serendipitous"]
    print("similar", sim, "serendipitous", ser)
    assert sim["pairs"] > 0 and ser["pairs"] > 0
    assert ser["mean_satisfaction"] > sim["mean_satisfaction"]
    assert stats["selected_mean_satisfaction"] > ser["mean_satisfaction"]
    total = sim["pairs"] + ser["pairs"] + stats["pairs"]["other"]["pairs"]
    assert total == inter.num_rows


def test_premise_grid_matches_pandas_at_every_level_and_delta(platform):
    """The report's (l, δ) grid, recomputed with plain pandas from the definition."""
    items, inter, clusters, ic = platform
    grid = curate(items, inter, clusters, ic, CurationConfig()).stats["premise_by_level_delta"]
    assert [(g["level"], g["delta"]) for g in grid] == [(2, 1), (3, 1), (3, 2), (4, 1), (4, 2),
                                                         (4, 3)]
    df = _frame(platform)
    for g in grid:
        lvl, d = g["level"], g["delta"]
        similar = df[f"ctx{lvl}"] == df[f"nxt{lvl}"]
        ser = ~similar & (df[f"ctx{lvl - d}"] == df[f"nxt{lvl - d}"])
        assert g["similar_pairs"] == similar.sum() and g["serendipitous_pairs"] == ser.sum()
        want = df.satisfaction[ser].mean() - df.satisfaction[similar].mean()
        assert g["serendipitous_minus_similar"] == pytest.approx(want, abs=2e-4)


def test_examples_split_by_context_item_and_follow_the_prompt_strategy(platform):
    items, inter, clusters, ic = platform
    res = curate(items, inter, clusters, ic, CurationConfig(prompt=PromptConfig("cot", 4)))
    ex = validate("examples", res.examples, refs={"items": items, "clusters": clusters}).to_pandas()
    assert len(ex) == res.selected.num_rows
    splits = ex.groupby("context_item_id").split.nunique()
    assert (splits == 1).all()                       # held out by context item
    assert set(ex.split) == {"train", "test"}
    assert 0.05 < (ex.split == "test").mean() < 0.45
    desc = dict(zip(clusters.column("cluster_id").to_pylist(),
                    clusters.column("description").to_pylist()))
    own3 = dict(zip(ic.column("item_id").to_pylist(), ic.column("c3").to_pylist()))
    assert (ex.target_description == ex.target_cluster_id.map(desc)).all()
    assert (ex.reasoning == ex.context_item_id.map(own3).map(desc)).all()
    assert ex.images.map(len).eq(4).all() and (ex.strategy == "cot").all()
    assert res.candidates == [desc[c] for c in res.candidate_cluster_ids]
    assert len(res.candidate_cluster_ids) == 12
    # the same selection rebuilt for the text strategy: title + context description, no images
    text = build_examples(res.selected, items, clusters, ic, PromptConfig("text"), 3).to_pandas()
    titles = dict(zip(items.column("item_id").to_pylist(), items.column("title").to_pylist()))
    row = text.iloc[0]
    assert titles[row.context_item_id] in row.prompt
    assert desc[own3[row.context_item_id]] in row.prompt
    assert text.images.map(len).eq(0).all() and text.reasoning.isna().all()
    thumbs = build_examples(res.selected, items, clusters, ic,
                            PromptConfig("video", use_thumbnail=True), 3).to_pandas()
    assert thumbs.images.map(lambda x: len(x) == 1 and x[0].endswith("#thumb")).all()


def test_split_is_deterministic_and_by_item():
    ids = [f"v{i:03d}" for i in range(200)]
    a = split_by_context(ids + ids[:50], 0.2, seed=0)
    assert a == split_by_context(list(reversed(ids)), 0.2, seed=0)
    assert a != split_by_context(ids, 0.2, seed=1)
    assert 20 < sum(v == "test" for v in a.values()) < 60
    assert set(split_by_context(["a", "b"], 0.01, 0).values()) == {"train", "test"}


def test_empty_or_unknown_inputs_say_which_setting_to_change(platform):
    items, inter, clusters, ic = platform
    df = _frame(platform)
    only_similar = pa.Table.from_pandas(df[df.ctx3 == df.nxt3][inter.column_names],
                                        preserve_index=False)
    with pytest.raises(ConfigError, match="no serendipitous pairs") as e:
        curate(items, only_similar, clusters, ic, CurationConfig())
    assert "--delta" in str(e.value)
    missing = ic.slice(1)                            # first item no longer clustered
    with pytest.raises(SchemaError, match="drop_unknown_items"):
        curate(items, inter, clusters, missing, CurationConfig())
    res = curate(items, inter, clusters, missing, CurationConfig(drop_unknown_items=True))
    assert res.stats["dropped_unknown_interactions"] > 0
    with pytest.raises(ConfigError, match="delta"):
        CurationConfig(level=2, delta=3).check()
    with pytest.raises(ConfigError, match="n_frames"):
        load_config(CurationConfig, settings={"prompt.n_frames": 0})


def test_curate_cli_end_to_end(synth_dir, tmp_path):
    import shutil

    from serendip.cli import main

    for name in ("items.parquet", "interactions.parquet"):
        shutil.copy(synth_dir / name, tmp_path / name)
    assert main(["cluster", "--data", str(tmp_path), "--branching", "2/2/3/2",
                 "--set", "embedding.text_encoder=tfidf"]) == 0
    assert main(["curate", "--data", str(tmp_path), "--level", "3", "--delta", "1",
                 "--top-k", "5", "--strategy", "multimodal", "--frames", "2"]) == 0
    doc = json.loads((tmp_path / "curation.json").read_text())
    for key in ("level", "delta", "prompt", "candidate_cluster_ids", "stats", "config"):
        assert key in doc
    assert doc["prompt"] == {"strategy": "multimodal", "n_frames": 2, "use_thumbnail": False}
    assert doc["level"] == 3
    ex = read_table(tmp_path, "examples")
    assert pd.Series(ex.column("target_cluster_id").to_pylist()).value_counts().max() <= 5
    assert all(len(x) == 2 for x in ex.column("images").to_pylist())
    assert main(["curate", "--data", str(tmp_path), "--level", "5"]) == 2
    # raw data in one directory, the tree and the examples in another
    work = tmp_path / "work"
    assert main(["cluster", "--data", str(synth_dir), "--out", str(work), "--branching",
                 "2/2/3/2", "--set", "embedding.text_encoder=tfidf"]) == 0
    assert main(["curate", "--data", str(synth_dir), "--out", str(work)]) == 0
    assert (work / "examples.parquet").exists() and not (synth_dir / "examples.parquet").exists()
