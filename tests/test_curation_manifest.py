"""curation.json has one writer and one reader (issue 13 step 3, "one source of truth per
concept"): every later stage takes l, δ, the held-out split and the prompt from
:func:`serendip.curation.read_curation`, so a file lacking a setting is refused by all of them
the same way — before, each stage read it by hand with its own default (``cur.get("delta", 1)``),
so a curation.json without δ was silently δ = 1 in fine-tuning, evaluation, scoring, serving and
the demo."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from serendip.curation import (
    CurationConfig,
    CurationManifest,
    curate_stage,
    read_curation,
    write_curation,
)
from serendip.data.io import write_table
from serendip.errors import ConfigError, SerendipError
from serendip.prompts import PromptConfig
from tests.synth_tree import synth_tree

# δ = 2 and a split unlike the defaults: a reader falling back to a default shows
CFG = CurationConfig(level=3, delta=2, top_k=5, test_fraction=0.25, seed=3,
                     prompt=PromptConfig("multimodal", 2))


@pytest.fixture(scope="module")
def curated(synth_dir, tmp_path_factory):
    items, inter, clusters, ic = synth_tree(synth_dir)
    wd = tmp_path_factory.mktemp("curated")
    write_table(wd, "items", items)
    write_table(wd, "interactions", inter, refs={"items": items})
    write_table(wd, "clusters", clusters)
    write_table(wd, "item_clusters", ic, refs={"items": items})
    return wd, curate_stage(wd, wd, CFG)


def _readers() -> dict:
    """Every stage's path to curation.json's l and δ: name -> fn(work dir) -> (level, delta)."""
    from serendip.commands.evaluate import _curated_level_delta
    from serendip.evaluation.baselines import baselines_stage
    from serendip.mllm.workdir import load_inputs
    from serendip.platform.demo.report import _add_curation
    from serendip.platform.demo.stages import _level_delta
    from serendip.platform.serving.lookup import ItemCatalog
    from serendip.report import Report
    from serendip.scoring.predict import delta_of

    def report(wd):
        rep = Report("t")
        _add_curation(rep, wd)
        found = re.search(r"Level l=(\d+), δ=(\d+)", rep.sections[0][1])
        return int(found[1]), int(found[2])

    def baselines(wd):
        rep = baselines_stage(wd, n_boot=1)
        return rep["level"], rep["delta"], rep["test_fraction"], rep["seed"]

    return {
        "read_curation": lambda wd: (read_curation(wd).level, read_curation(wd).delta),
        "finetune/evaluate load_inputs": lambda wd: (load_inputs(wd).level, load_inputs(wd).delta),
        "baselines_stage": baselines,
        "serving ItemCatalog": lambda wd: (ItemCatalog(wd).level, ItemCatalog(wd).delta),
        "scoring delta_of": lambda wd: delta_of(wd),
        "demo _level_delta": _level_delta,
        "demo report": report,
        "evaluate --online-sim/--replay": lambda wd: tuple(_curated_level_delta(wd).values()),
    }


def _copy(wd: Path, dst: Path, **edit) -> Path:
    """``wd``'s tables and curation.json, with top-level keys set (None: removed)."""
    shutil.copytree(wd, dst)
    doc = json.loads((dst / "curation.json").read_text())
    for key, value in edit.items():
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    (dst / "curation.json").write_text(json.dumps(doc))
    return dst


def test_writer_and_reader_round_trip(curated, tmp_path):
    wd, result = curated
    cur = read_curation(wd)
    assert cur == CurationManifest.from_result(result, CFG)
    assert (cur.level, cur.delta, cur.top_k, cur.test_fraction, cur.seed) == (3, 2, 5, 0.25, 3)
    assert cur.prompt == PromptConfig("multimodal", 2) == result.prompt
    assert cur.stats == json.loads(json.dumps(result.stats))
    assert list(cur.candidate_cluster_ids) == result.candidate_cluster_ids
    write_curation(tmp_path, cur)
    assert read_curation(tmp_path) == cur
    doc = json.loads((tmp_path / "curation.json").read_text())
    assert (doc["level"], doc["delta"], doc["top_k"]) == (3, 2, 5)
    assert doc["config"]["test_fraction"] == 0.25 and doc["prompt"]["n_frames"] == 2


def test_every_reader_takes_the_curated_level_and_delta(curated):
    wd, _ = curated
    for name, read in _readers().items():
        got = read(wd)
        if name == "scoring delta_of":
            assert got == 2, name
        elif name == "baselines_stage":
            assert got == (3, 2, 0.25, 3), name
        else:
            assert got == (3, 2), name


@pytest.mark.parametrize("edit,field", [
    ({"delta": None}, "delta"),                      # δ silently became 1 before
    ({"level": None}, "level"),                      # l silently became 3
    ({"delta": "2"}, "delta"),                       # text, not a number
    ({"delta": 5}, "delta"),                         # contradicts config.delta (and > level)
    ({"config": None}, "config"),                    # the split silently became 0.2 / seed 0
])
def test_a_bad_curation_json_is_refused_by_every_reader_the_same_way(curated, tmp_path, edit,
                                                                      field):
    bad = _copy(curated[0], tmp_path / "wd", **edit)
    errors = {}
    for name, read in _readers().items():
        with pytest.raises(ConfigError) as e:
            read(bad)
        assert e.value.field == field, (name, str(e.value))
        assert "serendip curate" in str(e.value) and "\n" not in str(e.value), name
        errors[name] = str(e.value)
    assert len(set(errors.values())) == 1, errors
    # the promotion gate's baseline: refused too, not silently left out of the gate
    from serendip.commands.promote import _workdir_baseline

    with pytest.raises(ConfigError) as e:
        _workdir_baseline(str(bad))
    assert str(e.value) in errors.values()


def test_the_held_out_split_is_never_a_default(curated, tmp_path):
    wd, _ = curated
    doc = json.loads((wd / "curation.json").read_text())
    conf = {k: v for k, v in doc["config"].items() if k != "test_fraction"}
    with pytest.raises(ConfigError, match="config.test_fraction"):
        read_curation(_copy(wd, tmp_path / "wd", config=conf))


def test_no_curation_json_names_the_stage_and_a_bare_tree_keeps_its_explicit_fallback(
        curated, tmp_path):
    from serendip.platform.serving.lookup import ItemCatalog
    from serendip.scoring.predict import delta_of

    bare = tmp_path / "bare"
    shutil.copytree(curated[0], bare)
    (bare / "curation.json").unlink()
    with pytest.raises(SerendipError, match="serendip curate") as e:
        read_curation(bare)
    assert not isinstance(e.value, ConfigError)
    assert read_curation(bare, missing_ok=True) is None
    # serving / scoring a cluster tree that was never curated: CurationConfig's l and δ,
    # or the explicit arguments
    default = CurationConfig()
    cat = ItemCatalog(bare)
    assert (cat.level, cat.delta, cat.prompt) == (default.level, default.delta, None)
    assert (ItemCatalog(bare, level=4, delta=2).level, delta_of(bare, 2)) == (4, 2)
    assert delta_of(bare) == default.delta
