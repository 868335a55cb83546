"""One implementation per concept (issue 13 step 3): the prompt manifest travels from curation to
the model unchanged, frames are sampled one way for training and serving, one "model reference
→ predictor" path, and ``serendip.mllm`` knows nothing of the synthetic oracle."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
from mllm_truth import TEST_TINY, truth_examples, truth_tables

from serendip.curation import CurationConfig, curate_stage
from serendip.data.io import read_table, write_table
from serendip.data.media import sample_frames
from serendip.errors import ConfigError, SerendipError
from serendip.mllm.config import FinetuneConfig
from serendip.mllm.inference import META, ClusterPredictor
from serendip.mllm.models import load_predictor
from serendip.mllm.stage import finetune_stage
from serendip.mllm.tiny import TinyVLMConfig
from serendip.mllm.train import finetune
from serendip.mllm.workdir import load_inputs
from serendip.prompts import PromptConfig, select_images

ROOT = Path(__file__).resolve().parents[1]


def _tiny_cfg(**over) -> FinetuneConfig:
    return FinetuneConfig(**{"steps": 2, "batch_size": 4, "eval_every": 2, "save_every": 2,
                             "eval_max_examples": 4,
                             "tiny": TinyVLMConfig(**TEST_TINY), **over})


def _spy_images(predictor: ClusterPredictor) -> list:
    """The image lists the predictor's encoder receives (what the model sees)."""
    seen: list = []
    encode = predictor.encoder.encode_batch

    def spy(prompts, images):
        seen.extend(list(x) for x in images)
        return encode(prompts, images)

    predictor.encoder.encode_batch = spy
    return seen


@pytest.fixture(scope="module")
def three_frames(synth_dir, tmp_path_factory):
    """A curation with 3 frames per video (not one of the paper's 1, 2, 4, 8) and the model
    fine-tuned on it by the stage, as the CLI runs them."""
    root = tmp_path_factory.mktemp("three")
    wd = root / "wd"
    wd.mkdir()
    for name in ("items.parquet", "interactions.parquet"):
        shutil.copy(synth_dir / name, wd / name)
    items, clusters, item_clusters = truth_tables(synth_dir)
    write_table(wd, "clusters", clusters)
    write_table(wd, "item_clusters", item_clusters, refs={"items": items})
    curate_stage(wd, cfg=CurationConfig(level=3, delta=1, prompt=PromptConfig("video", 3)))
    out = finetune_stage(wd, root / "model", _tiny_cfg(), progress=False, device="cpu", nproc=1)
    return wd, Path(out["model_dir"])


def test_an_unusual_frame_count_travels_from_curation_to_the_model(three_frames):
    wd, model_dir = three_frames
    manifest = {"strategy": "video", "n_frames": 3, "use_thumbnail": False}
    assert json.loads((wd / "curation.json").read_text())["prompt"] == manifest
    assert {len(x) for x in read_table(wd, "examples").column("images").to_pylist()} == {3}
    assert json.loads((model_dir / META).read_text())["prompt"] == manifest
    predictor = load_predictor(model_dir, wd)
    assert predictor.prompt_config == PromptConfig("video", 3)
    item = read_table(wd, "items").slice(0, 1).to_pylist()[0]
    frames = list(item["frames"])
    assert len(frames) > 3
    seen = _spy_images(predictor)
    predictor.predict([{"title": item["title"], "context_description": "", "images": frames},
                       {"title": item["title"], "context_description": "", "frames": frames}])
    assert seen == [sample_frames(frames, 3)] * 2       # 3 frames, as curation sampled them


def test_frames_are_sampled_for_the_model_as_for_its_training_examples(three_frames):
    """Fewer frames than the model's count: curation repeats frames to fill the count
    (select_images); the predictor passed the short list through as it was."""
    wd, model_dir = three_frames
    predictor = load_predictor(model_dir, wd)
    frames = list(read_table(wd, "items").slice(0, 1).to_pylist()[0]["frames"])[:2]
    seen = _spy_images(predictor)
    predictor.predict([{"title": "t", "context_description": "", "images": frames}])
    assert seen == [select_images(predictor.prompt_config, None, frames)]
    assert len(seen[0]) == 3


def test_a_model_saved_before_the_manifest_was_named_prompt_loads_exactly(three_frames,
                                                                           tmp_path):
    _, model_dir = three_frames
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    meta = json.loads((old / META).read_text())
    meta["prompt_config"] = meta.pop("prompt")
    (old / META).write_text(json.dumps(meta))
    assert ClusterPredictor.load(old).prompt_config == PromptConfig("video", 3)


def test_a_work_dir_curated_before_the_manifest_names_the_fix(three_frames, tmp_path):
    wd, _ = three_frames
    old = tmp_path / "old"
    shutil.copytree(wd, old, ignore=shutil.ignore_patterns("mllm", ".*"))
    doc = json.loads((old / "curation.json").read_text())
    doc.update(doc.pop("prompt"))            # the flat keys an older curation wrote
    (old / "curation.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="serendip curate") as e:
        load_inputs(old)
    assert e.value.field == "prompt"


def test_finetune_never_guesses_the_prompt_from_the_examples(synth_dir, tmp_path):
    """The frame count and the thumbnail were guessed from the first example's images (any
    count outside 1, 2, 4, 8 became 4; a real thumbnail path became one frame)."""
    examples, clusters, _, _ = truth_examples(synth_dir, PromptConfig("video", 2), n_items=16)
    with pytest.raises(ConfigError, match="prompt config") as e:
        finetune(examples, clusters, _tiny_cfg(), tmp_path / "m", progress=False, device="cpu")
    assert e.value.field == "prompt"
    assert not (tmp_path / "m").exists()


def test_one_model_reference_path(three_frames, tmp_path):
    wd, model_dir = three_frames
    predictor = load_predictor(model_dir, wd)
    assert load_predictor(predictor) is predictor
    assert predictor.encoder.base_dir == str(wd)              # media paths: the work dir
    with pytest.raises(SerendipError, match="neither a registry URI nor a directory") as e:
        load_predictor(str(tmp_path / "nowhere"), wd)
    assert e.value.field == "--model"
    with pytest.raises(SerendipError, match="no fine-tuned model") as e:
        load_predictor(None, tmp_path)
    assert e.value.field == "--model"
    (wd / "mllm").mkdir(exist_ok=True)                        # the latest model of a work dir
    shutil.copytree(model_dir, wd / "mllm" / "run", dirs_exist_ok=True)
    assert load_predictor(None, wd, registry=False).prompt_config == PromptConfig("video", 3)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_mllm_does_not_import_the_synthetic_oracle():
    """The ground truth of the synthetic platform belongs to evaluation (the true-bridge rate
    moved to serendip.evaluation.offline)."""
    found = {f.name: sorted(m for m in _imports(f)
                            if m.startswith(("serendip.evaluation", "serendip.data.synth")))
             for f in (ROOT / "serendip" / "mllm").glob("*.py")}
    assert not {k: v for k, v in found.items() if v}


def test_a_catalogue_item_reaches_the_served_model_with_its_training_frames(tmp_path):
    """The recommend flow sends a known item's frames to the MLLM; beyond the request limit
    (32) it re-spaced them (linspace, first and last kept), so the model then sampled its 4
    from 32 re-spaced frames, not the 4 curation picked from the item's 40."""
    import pyarrow as pa

    from serendip.curation import CurationManifest, write_curation
    from serendip.platform.serving.lookup import ItemCatalog
    from serendip.serving.infer_requests import mllm_request

    frames = [f"synth:2.120.1.0.1.{i}#f{i}" for i in range(40)]
    write_table(tmp_path, "items", pa.table({
        "item_id": ["v1", "v2"], "title": ["forty frames", "no frames"],
        "impressions": pa.array([2, 1], pa.int64()),
        "thumbnail": [None, "synth:2.120.1.0.1.9#thumb"], "frames": [frames, None]}))
    prompt = PromptConfig("video", 4)
    write_curation(tmp_path, CurationManifest(CurationConfig(level=3, delta=1, prompt=prompt)))
    sent = [x.decode() for x in mllm_request(ItemCatalog(tmp_path)("v1"))["FRAMES"][0]]
    assert sent == select_images(prompt, None, frames) == sample_frames(frames, 4)
    assert "FRAMES" not in mllm_request(ItemCatalog(tmp_path)("v2"))
