import hashlib

import numpy as np
import pyarrow.parquet as pq
import pytest

from serendip.data import media
from serendip.data.io import read_table
from serendip.data.synth import SynthConfig, synthesize, write_synth
from serendip.errors import ConfigError
from tests.conftest import SMALL


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_output_passes_validation(synth_dir):
    items = read_table(synth_dir, "items")
    inter = read_table(synth_dir, "interactions", refs={"items": items})
    assert items.num_rows == SMALL["items"]
    assert inter.num_rows == SMALL["interactions"]
    assert set(inter.column("user_id").to_pylist()) == {f"u{i:06d}" for i in range(SMALL["users"])}
    for name in ("taxonomy", "bridges", "item_topics", "user_interests"):
        assert (synth_dir / "truth" / f"{name}.parquet").exists()


def test_same_seed_gives_byte_identical_tables(tmp_path, synth_dir):
    write_synth(SynthConfig(**SMALL), tmp_path)
    for name in ("items.parquet", "interactions.parquet", "truth/bridges.parquet"):
        assert _digest(tmp_path / name) == _digest(synth_dir / name)
    other = tmp_path / "other"
    write_synth(SynthConfig(**{**SMALL, "seed": 8}), other)
    assert _digest(other / "interactions.parquet") != _digest(synth_dir / "interactions.parquet")


def test_taxonomy_has_four_levels_with_readable_names(synth_dir):
    tax = pq.read_table(synth_dir / "truth" / "taxonomy.parquet").to_pandas()
    b = SMALL["branching"]
    counts = tax.groupby("level").size().to_dict()
    assert counts == {1: b[0], 2: b[0] * b[1], 3: b[0] * b[1] * b[2], 4: int(np.prod(b))}
    leaf_name = tax[tax.level == 4].name.iloc[0]
    assert leaf_name.count(" > ") == 3 and leaf_name.split(" > ")[0] == "sports"


def test_bridges_share_level2_but_not_level3(synth_dir):
    br = pq.read_table(synth_dir / "truth" / "bridges.parquet").to_pandas()
    per_l2 = SMALL["branching"][2]
    assert (br.l3 != br.bridge_l3).all()
    assert (br.l3 // per_l2 == br.bridge_l3 // per_l2).all()


def test_zipf_impressions(synth_dir):
    imp = np.sort(read_table(synth_dir, "items").column("impressions").to_numpy())[::-1]
    top_share = imp[: len(imp) // 10].sum() / imp.sum()
    assert top_share > 0.5  # the head dominates traffic


def test_traffic_is_balanced_across_topics(synth_dir):
    topics = pq.read_table(synth_dir / "truth" / "item_topics.parquet").to_pandas()
    imp = read_table(synth_dir, "items").to_pandas()[["item_id", "impressions"]]
    per_l1 = topics.merge(imp).groupby("l1").impressions.sum()
    assert per_l1.max() / per_l1.min() < 1.5


def _joined(synth_dir):
    inter = read_table(synth_dir, "interactions").to_pandas()
    topics = pq.read_table(synth_dir / "truth" / "item_topics.parquet").to_pandas().set_index("item_id")
    for side, col in (("ctx", "context_item_id"), ("nxt", "next_item_id")):
        for k in ("leaf", "l1", "l2", "l3"):
            inter[f"{side}_{k}"] = topics.loc[inter[col], k].to_numpy()
    return inter


def test_sibling_bridge_affinity_raises_satisfaction(synth_dir):
    inter = _joined(synth_dir)
    br = pq.read_table(synth_dir / "truth" / "bridges.parquet").to_pandas().set_index("leaf")
    ui = pq.read_table(synth_dir / "truth" / "user_interests.parquet").to_pandas()
    aff = ui[ui.affinity].merge(br, left_on="leaf", right_index=True)
    liked = set(zip(aff.user_id, aff.bridge_l3))
    in_bridge = np.array([(u, l3) in liked for u, l3 in zip(inter.user_id, inter.nxt_l3)])
    sibling = (inter.ctx_l2 == inter.nxt_l2) & (inter.ctx_l3 != inter.nxt_l3)
    with_aff = inter.satisfaction[sibling & in_bridge].mean()
    without = inter.satisfaction[sibling & ~in_bridge].mean()
    assert with_aff > without + 0.2


def test_serendipitous_pairs_beat_similar_pairs(synth_dir):
    inter = _joined(synth_dir)
    ser = (inter.ctx_l2 == inter.nxt_l2) & (inter.ctx_l3 != inter.nxt_l3)
    sim = inter.ctx_l3 == inter.nxt_l3
    assert inter.satisfaction[ser].mean() > inter.satisfaction[sim].mean()
    # and bridges are rare in the logs: most serendipitous jumps miss the bridge
    assert ser.mean() < 0.3


def test_recall_ceiling_is_written(synth_dir):
    import json
    meta = json.loads((synth_dir / "truth" / "truth.json").read_text())
    assert 0.0 < meta["summary"]["recall_ceiling"] < 1.0


def test_media_carry_the_topic_and_are_deterministic(synth_dir):
    items = read_table(synth_dir, "items").slice(0, 3).to_pylist()
    for row in items:
        a = media.load_image(row["thumbnail"])
        b = media.load_image(row["thumbnail"])
        assert a.size == (64, 64) and a.tobytes() == b.tobytes()
        assert len(row["frames"]) == media.N_FRAMES
    v, kind = media.Visual.parse(items[0]["thumbnail"])
    assert kind == "thumb" and v.motif >= 0


def test_thumbnail_is_more_representative_than_a_random_frame():
    # the thumbnail always shows the motif and the main element; frames often do not
    v = media.Visual(shape=0, hue=120, texture=1, layout=0, motif=3, seed=11)
    thumb = np.asarray(media.render(v, "thumb")).astype(float)
    dists = []
    for s in range(40):
        vv = media.Visual(0, 120, 1, 0, 3, s)
        clean = np.asarray(media.render(vv, "thumb")).astype(float)
        frame = np.asarray(media.render(vv, "f2")).astype(float)
        dists.append(np.abs(frame - clean).mean())
    assert np.mean(dists) > 5  # frames differ materially from the clean view
    assert thumb[1:15, -15:-1].mean() > 60  # motif patch present in the thumbnail corner


def test_uniform_frame_sampling():
    frames = list(range(8))
    assert media.sample_frames(frames, 1) == [4]
    assert media.sample_frames(frames, 2) == [2, 6]
    assert media.sample_frames(frames, 4) == [1, 3, 5, 7]
    assert media.sample_frames(frames, 8) == frames


def test_bad_config_is_refused():
    with pytest.raises(ConfigError, match="use --items >= 24"):
        synthesize(SynthConfig(items=10, users=5, interactions=50, branching=(2, 2, 3, 2)))
    with pytest.raises(ConfigError, match="branching"):
        synthesize(SynthConfig(branching=(9, 9, 9, 9)))


def test_corrupt_image_is_a_clear_error(tmp_path):
    from serendip.errors import SerendipError
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(SerendipError, match="cannot be decoded"):
        media.load_image(bad)
    with pytest.raises(SerendipError, match="does not exist"):
        media.load_image(tmp_path / "missing.png")
