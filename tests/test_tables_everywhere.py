"""Issue 12, cases 3 and 4: every stage reads tables through one finder (parquet or CSV) and
resolves relative media paths against the data directory, never the current directory.

A CSV work directory: items.csv + interactions.csv written by a user, clusters and
item_clusters as CSV too; the curated examples come from ``curate_stage`` on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from serendip.data.io import read_table, table_path, write_table
from serendip.errors import SerendipError

ITEMS_CSV = ("item_id,title,impressions,thumbnail,frames\n"
             "001,alpha one,40,media/v1.png,media/v1.png;media/v1.png\n"
             "002,alpha two,30,media/v2.png,media/v2.png\n"
             "003,beta one,20,media/v3.png,media/v3.png\n"
             "004,beta two,10,media/v4.png,media/v4.png\n")


def _interactions_csv() -> str:
    rows = ["user_id,context_item_id,next_item_id,satisfaction,ts"]
    pairs = [("001", "003"), ("002", "004"), ("003", "001"), ("004", "002"), ("001", "002"),
             ("003", "004")]
    for u in range(6):
        for k, (a, b) in enumerate(pairs):
            rows.append(f"u{u},{a},{b},{0.4 + 0.1 * ((u + k) % 5)},{1767261600 + 60 * k}")
    return "\n".join(rows) + "\n"


# Two branches a and b that split at level 3 under one level-2 cluster (a2), so each level-3
# cluster has the other as its serendipitous sibling (l=3, δ=1).
CLUSTERS_CSV = ("cluster_id,level,parent_id,description,size,traffic\n"
                "a1,1,,topic a level 1,4,20\n"
                "a2,2,a1,topic a level 2,4,20\n"
                + "".join(f"{b}{lvl},{lvl},{f'{b}{lvl - 1}' if lvl > 3 else 'a2'},"
                          f"topic {b} level {lvl},2,10\n" for b in "ab" for lvl in (3, 4)))
ITEM_CLUSTERS_CSV = ("item_id,c1,c2,c3,c4\n"
                     + "".join(f"00{i},a1,a2,{b}3,{b}4\n"
                               for i, b in zip(range(1, 5), "aabb")))


def _png(path: Path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), colour, np.uint8)).save(path)


@pytest.fixture
def csv_wd(tmp_path) -> Path:
    wd = tmp_path / "data"
    wd.mkdir()
    (wd / "items.csv").write_text(ITEMS_CSV)
    (wd / "interactions.csv").write_text(_interactions_csv())
    (wd / "clusters.csv").write_text(CLUSTERS_CSV)
    (wd / "item_clusters.csv").write_text(ITEM_CLUSTERS_CSV)
    for i in range(1, 5):
        _png(wd / "media" / f"v{i}.png", (60 * i, 20, 200 - 40 * i))
    return wd


# ---------------------------------------------------------------- case 3: one table finder
def test_curate_then_finetune_inputs_on_a_csv_work_dir(csv_wd):
    """finetune's loader said `items.parquet is missing (fix: run serendip synth ...)`."""
    from serendip.curation import CurationConfig, curate_stage
    from serendip.mllm.workdir import load_inputs
    from serendip.prompts import PromptConfig

    curate_stage(csv_wd, cfg=CurationConfig(level=3, delta=3, prompt=PromptConfig("text")))
    inp = load_inputs(csv_wd)
    assert inp.items.column("item_id").to_pylist() == ["001", "002", "003", "004"]
    assert set(inp.examples.column("context_item_id").to_pylist()) <= {"001", "002", "003",
                                                                       "004"}
    assert inp.prompt.strategy == "text"


def test_finetune_missing_items_advice_never_overwrites_data(tmp_path, capsys):
    from serendip.cli import main

    wd = tmp_path / "wd"
    wd.mkdir()
    assert main(["finetune", "--workdir", str(wd)]) == 2
    err = capsys.readouterr().err
    assert "items: not found" in err and "items.csv" in err
    assert "synth" not in err


def test_serving_catalogue_sees_csv_items(csv_wd):
    """The serving catalogue saw 0 items on a CSV work dir."""
    from serendip.platform.serving.lookup import ItemCatalog

    cat = ItemCatalog(csv_wd)
    assert len(cat) == 4
    assert cat("001")["context_description"] == "topic a level 3"
    assert cat("001")["base_dir"] == str(csv_wd)
    by_path = ItemCatalog(items=str(csv_wd / "items.csv"))
    assert sorted(by_path.items) == ["001", "002", "003", "004"]


def test_serving_catalogue_items_file_is_validated(tmp_path):
    """An items parquet passed by path was read raw: integer ids stayed ints."""
    import pyarrow.parquet as pq

    from serendip.platform.serving.lookup import ItemCatalog

    pq.write_table(pa.table({"item_id": [1, 2], "title": ["a", "b"], "impressions": [1, 2]}),
                   tmp_path / "items.parquet")
    assert sorted(ItemCatalog(items=str(tmp_path / "items.parquet")).items) == ["1", "2"]
    with pytest.raises(SerendipError, match="items: file .* does not exist"):
        ItemCatalog(items=str(tmp_path / "nope.parquet"))


def test_snapshot_and_features_read_csv_tables(csv_wd, tmp_path):
    from serendip.platform.features import item_clusters_source
    from serendip.serving.repository import export_recommend_snapshot

    src = item_clusters_source(csv_wd)
    assert src is not None and src.column("item_id").to_pylist() == ["001", "002", "003", "004"]
    assert src.column("c3_description").to_pylist()[0] == "topic a level 3"
    scored = pa.table({"item_id": ["001"], "cluster_ids": [["b3"]],
                       "descriptions": [["topic b level 3"]], "scores": [[0.9]],
                       "model_version": ["m/v1"], "content_hash": ["h"],
                       "scored_at": pa.array([0], pa.timestamp("us", tz="UTC"))})
    write_table(csv_wd, "item_serendipity", scored)
    out = export_recommend_snapshot(csv_wd, tmp_path / "repo")
    weights = out / "1" / "weights"
    got = read_table(weights, "items")         # the Triton recommend model reads parquet
    assert got.column("item_id").to_pylist() == ["001", "002", "003", "004"]
    assert table_path(weights, "item_clusters").exists()


def test_scoring_state_from_a_csv_data_dir(csv_wd, tmp_path):
    """prepare_state copied items.parquet only: a CSV data dir failed with FileNotFoundError."""
    from serendip.scoring import prepare_state

    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("clusters", "item_clusters"):
        write_table(tree, name, read_table(csv_wd, name))
    (tree / "cluster_tree").mkdir()
    state = prepare_state(tmp_path / "state", csv_wd, tree)
    assert read_table(state, "items").column("item_id").to_pylist() == ["001", "002", "003",
                                                                         "004"]


def test_no_reader_bypasses_the_table_finder():
    """Every table of the data contracts is read via serendip.data.io (grep, so a new raw
    reader of a contract table shows up here)."""
    import re

    from serendip.data.schemas import TABLES

    root = Path(__file__).resolve().parents[1]
    names = "|".join(TABLES)
    pattern = re.compile(r"(read_table|ParquetFile|read_csv)\([^)]*[\"'/](" + names
                         + r")\.(parquet|csv)")
    exists = re.compile(r"table_path\([^)]*\)\.exists\(\)|/\s*f?[\"'](" + names
                        + r")\.(parquet|csv)[\"']")     # a hand-built path to a contract table
    offenders = []
    for path in (root / "serendip").rglob("*.py"):     # the KFP components included
        if path.name == "io.py" or "platform/demo" in str(path):
            continue   # the demo reads its own synthetic work dir
        text = path.read_text()
        offenders += [f"{path.relative_to(root)}: {m.group(0)}"
                      for m in (*pattern.finditer(text), *exists.finditer(text))]
    assert not offenders, offenders


# ---------------------------------------------------------------- case 4: media resolution
class _LoadingPredictor:
    """Stands in for ClusterPredictor: loads each item's images like the Encoder does with no
    base_dir (so a relative path would be opened against the cwd)."""

    model_version = "fake/v1"
    level = 3
    cluster_ids = ["a3", "b3"]
    batch_size = 8

    def __init__(self):
        from serendip.prompts import PromptConfig

        self.prompt_config = PromptConfig(strategy="video", n_frames=1)
        self.loaded: list[str] = []

    def predict(self, inputs, k=1, constrained=True):
        from serendip.data.media import load_image
        from serendip.mllm.inference import Prediction
        from serendip.prompts import select_images

        out = []
        for x in inputs:
            for ref in select_images(self.prompt_config, x.get("thumbnail"), x.get("frames")):
                load_image(ref)
                self.loaded.append(ref)
            out.append([Prediction("b3", "topic b level 3", 0.9),
                        Prediction("a3", "topic a level 3", 0.1)])
        return out


def test_score_resolves_media_against_the_work_dir_not_the_cwd(csv_wd, tmp_path, monkeypatch):
    from serendip.scoring import ScoringConfig, score_items

    monkeypatch.chdir(tmp_path)                    # not the work dir: media/v1.png is not here
    pred = _LoadingPredictor()
    result = score_items(csv_wd, pred, ScoringConfig(coverage=1.0, assign_new=False),
                         progress=False)
    assert result.table.num_rows == 4
    assert all(Path(p).is_absolute() and Path(p).is_relative_to(csv_wd) for p in pred.loaded)


def test_one_media_resolver(tmp_path):
    from serendip.data.media import load_image, resolve_media

    _png(tmp_path / "media" / "x.png", (1, 2, 3))
    assert resolve_media("media/x.png", tmp_path) == str(tmp_path / "media" / "x.png")
    for ref in ("/abs/x.png", "synth:0.0.0.0.-1.1#thumb", "s3://bucket/x.png", None, b"\x89"):
        assert resolve_media(ref, tmp_path) == ref
    assert load_image("media/x.png", base_dir=tmp_path).size == (16, 16)


def test_serving_request_reads_media_from_the_data_dir(csv_wd, tmp_path, monkeypatch):
    from serendip.platform.serving.lookup import ItemCatalog
    from serendip.serving.infer_requests import mllm_request

    monkeypatch.chdir(tmp_path)
    arrays = mllm_request(ItemCatalog(csv_wd)("001"))
    assert arrays["THUMBNAIL"][0][0] == (csv_wd / "media" / "v1.png").read_bytes()


def test_curation_json_records_the_strategy(csv_wd):
    from serendip.curation import CurationConfig, curate_stage
    from serendip.prompts import PromptConfig

    curate_stage(csv_wd, cfg=CurationConfig(level=3, delta=3, prompt=PromptConfig("text")))
    assert json.loads((csv_wd / "curation.json").read_text())["prompt"]["strategy"] == "text"


def test_registry_dataset_inputs_name_the_csv_files(csv_wd):
    """MLflow dataset inputs listed <table>.parquet paths: a CSV work dir logged nothing."""
    from serendip.mllm.stage import training_tables

    tables = training_tables(csv_wd)
    assert tables["items"] == csv_wd / "items.csv"
    assert tables["clusters"] == csv_wd / "clusters.csv"
    assert "examples" not in tables                     # not curated yet: nothing to log


def test_scoring_state_resolves_media_against_the_data_dir(csv_wd, tmp_path, monkeypatch):
    """KFP scoring copies items into a state volume: relative media must still resolve against
    the data directory (they resolved against the state dir, where no media/ exists)."""
    from serendip.platform.serving.lookup import ItemCatalog
    from serendip.scoring import ScoringConfig, prepare_state, score_items

    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("clusters", "item_clusters"):
        write_table(tree, name, read_table(csv_wd, name))
    (tree / "cluster_tree").mkdir()
    state = prepare_state(tmp_path / "state", csv_wd, tree)
    monkeypatch.chdir(tmp_path)
    pred = _LoadingPredictor()
    result = score_items(state, pred, ScoringConfig(coverage=1.0, assign_new=False),
                         progress=False)
    assert result.table.num_rows == 4 and len(pred.loaded) == 4
    assert all(Path(p).parent == csv_wd.resolve() / "media" for p in pred.loaded)
    assert ItemCatalog(state)("001")["base_dir"] == str(csv_wd.resolve())


def test_scoring_state_from_a_parquet_dataset_directory(tmp_path):
    """items.parquet as a directory of part files is copied as a table, not as one file."""
    import pyarrow.parquet as pq

    from serendip.scoring import prepare_state

    data, tree = tmp_path / "data", tmp_path / "tree"
    (data / "items.parquet").mkdir(parents=True)
    pq.write_table(pa.table({"item_id": ["001"], "title": ["t"], "impressions": [1]}),
                   data / "items.parquet" / "part-0.parquet")
    tree.mkdir()
    for name, text in (("clusters", CLUSTERS_CSV), ("item_clusters", ITEM_CLUSTERS_CSV)):
        (tree / f"{name}.csv").write_text(text)
    (tree / "cluster_tree").mkdir()
    state = prepare_state(tmp_path / "state", data, tree)
    assert read_table(state, "items").column("item_id").to_pylist() == ["001"]


def test_curate_component_defaults_adapt_to_a_text_only_catalogue(csv_wd, tmp_path):
    """The KFP curate component always passed strategy=cot, n_frames=4 as explicit prompt
    settings, which switched the media adaptation off: a text-only catalogue failed in the
    pipeline (`--strategy text`) while the CLI adapted. Its defaults now mean "adapt"."""
    pytest.importorskip("kfp")
    from types import SimpleNamespace

    from serendip.platform.kfp.components.curate import curate

    (csv_wd / "items.csv").write_text("item_id,title,impressions\n001,alpha one,40\n"
                                      "002,alpha two,30\n003,beta one,20\n004,beta two,10\n")
    out = tmp_path / "examples"
    logged = {}
    examples = SimpleNamespace(path=str(out), metadata={})
    metrics = SimpleNamespace(log_metric=lambda k, v: logged.__setitem__(k, v))
    data, tree = SimpleNamespace(path=str(csv_wd)), SimpleNamespace(path=str(csv_wd))
    curate.python_func(data=data, tree=tree, examples=examples, metrics=metrics)
    cur = json.loads((out / "curation.json").read_text())
    assert cur["prompt"]["strategy"] == "text" and examples.metadata["strategy"] == "text"
    assert logged["examples"] > 0
    # an explicit choice is still the user's: a visual prompt on text-only items is refused
    with pytest.raises(Exception, match="strategy text"):
        curate.python_func(data=data, tree=tree, examples=examples, metrics=metrics,
                           strategy="cot")
