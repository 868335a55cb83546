"""Feast: after `serendip score` (which applies and materializes), online reads return the
scored clusters for scored items and an explicit miss for unknown ones."""

from __future__ import annotations

import shutil

import pytest

from serendip.data.io import read_table
from serendip.errors import ConfigError, SerendipError
from serendip.testing.scoring import build_scoring_workdir

pytest.importorskip("feast")


@pytest.fixture(scope="module")
def scored(synth_dir, tmp_path_factory):
    from serendip.cli import main

    wd = tmp_path_factory.mktemp("features") / "wd"
    wd.mkdir()
    for name in ("items.parquet", "interactions.parquet"):
        shutil.copy(synth_dir / name, wd / name)
    shutil.copytree(synth_dir / "truth", wd / "truth")
    _, model_dir = build_scoring_workdir(wd)
    assert main(["score", "--workdir", str(wd), "--model", str(model_dir), "--k", "2",
                 "--quiet", "--batch-size", "16"]) == 0
    return wd, model_dir


def test_online_features_after_score(scored):
    from serendip.platform.features import OnlineFeatures

    wd, _ = scored
    table = read_table(wd, "item_serendipity")
    ic = {r["item_id"]: r for r in read_table(wd, "item_clusters").to_pylist()}
    desc = {r["cluster_id"]: r["description"] for r in read_table(wd, "clusters").to_pylist()}
    rows = table.to_pylist()
    sample = rows[::max(1, len(rows) // 25)]
    online = OnlineFeatures(wd)
    got = online.get([r["item_id"] for r in sample] + ["no-such-item"],
                     views=("item_serendipity", "item_clusters"))
    for want, row in zip(sample, got):
        assert row["found"] and row["missing_views"] == []
        assert row["cluster_ids"] == want["cluster_ids"] and len(want["cluster_ids"]) == 2
        assert row["descriptions"] == want["descriptions"]
        assert row["scores"] == pytest.approx(want["scores"])
        assert row["model_version"] == want["model_version"]
        for lvl in (1, 2, 3, 4):
            assert row[f"c{lvl}"] == ic[want["item_id"]][f"c{lvl}"]
            assert row[f"c{lvl}_description"] == desc[row[f"c{lvl}"]]
    miss = got[-1]
    assert miss["item_id"] == "no-such-item" and miss["found"] is False
    assert miss["missing_views"] == ["item_serendipity", "item_clusters"]
    assert all(miss[f] is None for f in ("cluster_ids", "scores", "model_version", "c1"))
    assert online.serendipity("no-such-item") is None
    assert online.serendipity(sample[0]["item_id"])["cluster_ids"] == sample[0]["cluster_ids"]
    # a clustered item that scoring did not cover (long tail): clusters yes, serendipity no
    tail = next(i for i in ic if i not in {r["item_id"] for r in rows})
    row = online.get([tail], views=("item_serendipity", "item_clusters"))[0]
    assert row["missing_views"] == ["item_serendipity"] and row["c4"] == ic[tail]["c4"]
    with pytest.raises(SerendipError, match="views"):
        online.get(["x"], views=("nope",))


def test_rescore_materializes_incrementally(scored, tmp_path):
    from serendip.mllm.inference import ClusterPredictor
    from serendip.platform import features
    from serendip.scoring import ScoringConfig, score_items

    wd = tmp_path / "wd"
    shutil.copytree(scored[0], wd)                  # the copy carries its own Feast repo
    predictor = ClusterPredictor.load(scored[1], model_version="v-next")
    score_items(wd, predictor, ScoringConfig(k=1, batch_size=16), progress=False)
    stats = features.sync(wd)
    assert {v["mode"] for v in stats["materialized"].values()} == {"incremental"}
    online = features.OnlineFeatures(wd)
    ids = read_table(wd, "item_serendipity").column("item_id").to_pylist()[:10]
    assert {r["model_version"] for r in online.get(ids)} == {"v-next"}
    # the original work directory's store is untouched
    before = features.OnlineFeatures(scored[0]).get(ids)
    assert "v-next" not in {r["model_version"] for r in before}
    for name in ("registry.db", "online_store.db", "item_serendipity.parquet"):
        assert (wd / "feature_repo" / "data" / name).exists()       # all inside the copy


def test_online_store_selection(tmp_path, monkeypatch):
    from feast.repo_config import load_repo_config

    from serendip.platform import features

    repo = features.prepare_repo(tmp_path)
    cfg = load_repo_config(repo, repo / "feature_store.yaml")
    assert cfg.online_store.type == "sqlite" and cfg.offline_store.type == "file"
    monkeypatch.setenv(features.ONLINE_ENV, "redis")
    monkeypatch.delenv("FEAST_REDIS_CONNECTION_STRING", raising=False)
    with pytest.raises(ConfigError, match="FEAST_REDIS_CONNECTION_STRING"):
        features.prepare_repo(tmp_path)
    monkeypatch.setenv("FEAST_REDIS_CONNECTION_STRING", "redis.example:6379,password=s3cret")
    repo = features.prepare_repo(tmp_path)
    assert "s3cret" not in (repo / "feature_store.yaml").read_text()    # expanded at load only
    cfg = load_repo_config(repo, repo / "feature_store.yaml")
    assert cfg.online_store.type == "redis"
    assert cfg.online_store.connection_string == "redis.example:6379,password=s3cret"
    monkeypatch.setenv(features.ONLINE_ENV, "cassandra")
    with pytest.raises(ConfigError, match="sqlite"):
        features.prepare_repo(tmp_path)


def test_definitions(tmp_path):
    from feast import FeatureView

    from serendip.platform import features

    objs = features.load_definitions(features.prepare_repo(tmp_path))
    views = {o.name: o for o in objs if isinstance(o, FeatureView)}
    assert set(views) == set(features.VIEWS)
    for name, fv in views.items():
        assert sorted(f.name for f in fv.features) == sorted(features.FEATURES[name])
        assert fv.ttl.days > 0 and fv.entities == ["item_id"]
    with pytest.raises(SerendipError, match="serendip score"):
        features.open_store(tmp_path / "elsewhere")


def test_rows_that_leave_the_offline_table_leave_the_online_store(tmp_path):
    """Issue 12 case 8: a re-score with a smaller coverage and another model leaves 4 rows in
    item_serendipity; the online store then serves exactly those 4 (the 6 others are misses),
    and the Feast lookup agrees with the snapshot the Triton ``recommend`` model reads."""
    from serendip.platform import features
    from serendip.platform.serving.lookup import ClusterLookup
    from serendip.serving.repository import export_recommend_snapshot
    from tests.serving_redis import write_scores

    ids = [f"v{i}" for i in range(10)]
    write_scores(tmp_path, ids, "m1", clusters=("1.0.0", "1.1.0"))
    features.sync(tmp_path)
    assert {r["item_id"] for r in features.OnlineFeatures(tmp_path).get(ids) if r["found"]} \
        == set(ids)
    write_scores(tmp_path, ids[:4], "m2", clusters=("2.0.0",))
    stats = features.sync(tmp_path)
    assert stats["materialized"]["item_serendipity"]["mode"] == "rebuild"
    rows = features.OnlineFeatures(tmp_path).get(ids)
    assert [r["item_id"] for r in rows if r["found"]] == ids[:4]
    assert {r["model_version"] for r in rows if r["found"]} == {"m2"}
    assert all(r["cluster_ids"] is None for r in rows[4:])
    repo = export_recommend_snapshot(tmp_path, tmp_path / "model_repository")
    feast_lookup = ClusterLookup(tmp_path, "feast")
    snapshot = ClusterLookup(repo / "1" / "weights", "table")
    for i in ids:
        a, b = feast_lookup(i), snapshot(i)
        assert (a is None) == (b is None), i
        if a is not None:
            assert (a.cluster_id, a.description) == (b.cluster_id, b.description) == \
                ("2.0.0", "desc 2.0.0")
    # nothing left: an incremental sync after the rebuild keeps the store as is
    assert features.sync(tmp_path)["materialized"]["item_serendipity"]["mode"] == "incremental"
    assert not features.rebuild_marker(tmp_path, "item_serendipity").exists()


def test_direct_sqlite_reader_matches_feast(tmp_path):
    """Triton's recommend reads the sqlite online store directly (no Feast in its venv): same
    rows and misses as Feast, also right after a re-score removed rows — so the transformer
    and Triton agree while both keep running (issue 12 case 8)."""
    from serendip.platform import features
    from serendip.platform.serving.lookup import ClusterLookup, DirectOnline
    from tests.serving_redis import write_scores

    ids = ["v1", "é-2", "x" * 200, "v4"]
    write_scores(tmp_path, ids, "m1", clusters=("3.1.0", "3.2.1"))
    features.sync(tmp_path)
    db = features.repo_dir(tmp_path) / "data" / "online_store.db"
    direct = DirectOnline(sqlite_path=db)
    asked = ids + ["nope"]
    assert direct.get(asked) == features.OnlineFeatures(tmp_path).get(asked)
    lookup = ClusterLookup(tmp_path, "table", sqlite_online=db)
    assert lookup.kind == "feast" and lookup("v1") == ClusterLookup(tmp_path, "feast")("v1")
    write_scores(tmp_path, ids[:1], "m2", clusters=("9.0.0",))
    features.sync(tmp_path)                              # table dropped and re-created
    assert direct.get(asked) == features.OnlineFeatures(tmp_path).get(asked)
    assert lookup("v1").cluster_id == "9.0.0" and lookup("v4") is None
