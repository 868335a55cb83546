"""Issue 12, case 6: the default curation adapts to the media the catalogue has (frames →
thumbnail → text) and says what it chose; an explicit visual prompt on items without media is
one error naming ``--strategy text``."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from serendip.curation import CurationConfig, curate_stage
from serendip.data.io import read_table, write_table
from serendip.errors import SerendipError
from serendip.prompts import PromptConfig


def _tree(wd):
    ids, level, parent, desc = [], [], [], []
    for b in "ab":
        for lvl in range(1, 5):
            ids.append(f"{b}{lvl}")
            level.append(lvl)
            parent.append(f"{b}{lvl - 1}" if lvl > 1 else None)
            desc.append(f"topic {b} level {lvl}")
    write_table(wd, "clusters", pa.table({"cluster_id": ids, "level": level, "parent_id": parent,
                                          "description": desc, "size": [2] * 8,
                                          "traffic": [10] * 8}))
    write_table(wd, "item_clusters", pa.table(
        {"item_id": ["v1", "v2", "v3", "v4"],
         **{f"c{lvl}": [f"{b}{lvl}" for b in "aabb"] for lvl in range(1, 5)}}))


def _workdir(tmp_path, thumbnails=None, frames=None):
    wd = tmp_path / "wd"
    wd.mkdir()
    cols = {"item_id": ["v1", "v2", "v3", "v4"], "title": ["a one", "a two", "b one", "b two"],
            "impressions": [4, 3, 2, 1]}
    if thumbnails is not None:
        cols["thumbnail"] = thumbnails
    if frames is not None:
        cols["frames"] = pa.array(frames, pa.list_(pa.string()))
    write_table(wd, "items", pa.table(cols))
    pairs = [("v1", "v3"), ("v2", "v4"), ("v3", "v1"), ("v4", "v2")]
    write_table(wd, "interactions", pa.table({
        "user_id": [f"u{k}" for k in range(len(pairs))],
        "context_item_id": [a for a, _ in pairs], "next_item_id": [b for _, b in pairs],
        "satisfaction": [0.8] * len(pairs),
        "ts": pa.array([1_767_261_600] * len(pairs), pa.int64())}))
    _tree(wd)
    return wd


SYNTH = [f"synth:0.10.0.0.-1.{i}#thumb" for i in range(4)]
FRAMES = [[f"synth:0.10.0.0.-1.{i}#f{k}" for k in range(4)] for i in range(4)]


def test_default_on_a_text_only_catalogue_uses_the_text_prompt_and_says_so(tmp_path):
    wd = _workdir(tmp_path)                     # no thumbnail, no frames
    result = curate_stage(wd, cfg=CurationConfig(delta=3))
    ex = read_table(wd, "examples")
    assert set(ex.column("strategy").to_pylist()) == {"text"}
    assert all(imgs == [] for imgs in ex.column("images").to_pylist())
    assert result.stats["prompt"]["strategy"] == "text"
    assert "neither frames nor a thumbnail" in result.stats["prompt"]["chosen"]
    assert json.loads((wd / "curation.json").read_text())["prompt"]["strategy"] == "text"


def test_default_cli_on_a_text_only_catalogue(tmp_path, capsys):
    from serendip.cli import main

    wd = _workdir(tmp_path, thumbnails=[None] * 4, frames=[None] * 4)
    assert main(["curate", "--data", str(wd), "--delta", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt"]["strategy"] == "text" and "--strategy" in out["prompt"]["chosen"]


def test_default_falls_back_to_the_thumbnail_when_frames_are_missing(tmp_path):
    wd = _workdir(tmp_path, thumbnails=SYNTH)
    result = curate_stage(wd, cfg=CurationConfig(delta=3))
    assert (result.prompt.strategy, result.prompt.use_thumbnail) == ("cot", True)
    ex = read_table(wd, "examples").to_pylist()
    assert all(len(r["images"]) == 1 and r["images"][0].endswith("#thumb") for r in ex)


def test_default_with_frames_is_the_papers_cot_on_frames(tmp_path):
    wd = _workdir(tmp_path, thumbnails=SYNTH, frames=FRAMES)
    result = curate_stage(wd, cfg=CurationConfig(delta=3))
    assert result.prompt == PromptConfig()
    assert "every context item has frames" in result.stats["prompt"]["chosen"]


@pytest.mark.parametrize("argv,field,fix", [
    (["--strategy", "video"], "items.frames", "--strategy text"),
    (["--strategy", "cot"], "items.frames", "--strategy text"),
    (["--thumbnail"], "items.thumbnail", "--strategy text"),
    (["--frames", "4"], "items.frames", "--strategy text"),
])
def test_explicit_visual_prompt_without_media_names_strategy_text(tmp_path, capsys, argv, field,
                                                                  fix):
    from serendip.cli import main

    wd = _workdir(tmp_path)
    assert main(["curate", "--data", str(wd), "--delta", "3", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err and fix in err


def test_explicit_frames_with_thumbnails_present_suggests_the_thumbnail(tmp_path):
    wd = _workdir(tmp_path, thumbnails=SYNTH)
    with pytest.raises(SerendipError, match=r"items.frames: 4 of 4 context items have no frames.*"
                                            r"--thumbnail.*--strategy text"):
        curate_stage(wd, cfg=CurationConfig(delta=3, prompt=PromptConfig("video")))


def test_finetune_rebuild_with_a_visual_prompt_on_text_items(tmp_path):
    from serendip.mllm.workdir import load_inputs, rebuild_examples

    wd = _workdir(tmp_path)
    curate_stage(wd, cfg=CurationConfig(delta=3))
    inp = load_inputs(wd)
    assert inp.prompt.strategy == "text"
    with pytest.raises(SerendipError, match=r"items.frames: .*prompt.strategy=text"):
        rebuild_examples(inp, PromptConfig(strategy="video"))


def test_frames_message_names_the_text_prompt():
    from serendip.data.media import sample_frames

    with pytest.raises(SerendipError, match="--strategy text"):
        sample_frames([], 4)
