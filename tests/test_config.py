"""One config loader (issue 13 step 2): YAML + settings + ``--set`` → nested dataclasses,
type coercion from the field types, unknown keys and wrong types refused in one line; every
config validates on construction and carries help for every field; ``docs/settings.md`` is
generated from that help and must be current:

    .venv/bin/python tests/test_config.py          # rewrites docs/settings.md
"""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

import pytest

from serendip.config import SECTIONS, load_config, section_class, settings_markdown, settings_rows
from serendip.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "settings.md"
REGENERATE = ".venv/bin/python tests/test_config.py"


# ---------------------------------------------------------------- the loader
def test_layers_merge_in_order_and_dotted_keys_reach_nested_configs(tmp_path):
    from serendip.mllm.config import FinetuneConfig
    from serendip.prompts import PromptConfig

    yaml_file = tmp_path / "ft.yaml"
    yaml_file.write_text("steps: 10\nlr: 1e-4\ntiny:\n  text_hidden: 64\n  text_layers: 3\n"
                         "prompt:\n  strategy: video\n")
    cfg = load_config(FinetuneConfig, yaml_file,
                      ["steps=30", "tiny.text_layers=1", "lora_targets=[q_proj, v_proj]"],
                      settings={"steps": 20, "batch_size": 8.0, "prompt.n_frames": 2})
    assert cfg.steps == 30                          # --set beats settings beats the file
    assert cfg.lr == 1e-4 and isinstance(cfg.lr, float)   # YAML 1.1 reads 1e-4 as text
    assert cfg.batch_size == 8 and isinstance(cfg.batch_size, int)   # KFP: numbers are floats
    assert (cfg.tiny.text_hidden, cfg.tiny.text_layers, cfg.tiny.text_heads) == (64, 1, 4)
    assert cfg.prompt == PromptConfig("video", 2)   # file and settings merged, not replaced
    assert cfg.lora_targets == ("q_proj", "v_proj")
    assert load_config(FinetuneConfig) == FinetuneConfig()


def test_optional_nested_config_and_union_types():
    from serendip.curation import CurationConfig
    from serendip.data.recbole import RecBoleImportConfig
    from serendip.tree import ClusterConfig

    assert load_config(CurationConfig).prompt is None          # adapts to the media
    assert load_config(CurationConfig, sets=["prompt.use_thumbnail=true"]).prompt.use_thumbnail
    assert load_config(ClusterConfig, sets=["branching=4/3/4/2"]).branching == (4, 3, 4, 2)
    assert load_config(ClusterConfig, settings={"branching": [4.0, 3.0, 4.0, 2.0]}
                       ).branching == (4, 3, 4, 2)
    assert load_config(ClusterConfig, sets=["embedding.w_text=0.5"]).embedding.w_text == 0.5
    cfg = load_config(RecBoleImportConfig, sets=["rating_scale=[1, 5]", "title_field=null"])
    assert cfg.rating_scale == (1.0, 5.0) and cfg.title_field is None


@pytest.mark.parametrize("sets, field, words", [
    (["stesp=3"], "stesp", ["did you mean steps"]),
    (["tiny.text_hiden=3"], "tiny.text_hiden", ["did you mean tiny.text_hidden"]),
    (["steps=1.5"], "steps", ["1.5", "an integer"]),
    (["lr=fast"], "lr", ["'fast'", "a number"]),
    (["lora_targets=q_proj"], "lora_targets", ["'q_proj'", "a list of texts"]),
    (["base_model=123"], "base_model", ["123", "text", "quote it"]),
    (["prompt.strategy=audio"], "prompt.strategy", ["audio"]),
    (["lr=-1"], "lr", ["lr=-1.0"]),
    (["tiny=3"], "tiny", ["a mapping of TinyVLMConfig settings"]),
])
def test_bad_settings_are_one_line_naming_the_field(sets, field, words):
    from serendip.mllm.config import FinetuneConfig

    with pytest.raises(ConfigError) as e:
        load_config(FinetuneConfig, sets=sets)
    msg = str(e.value)
    assert "\n" not in msg and field in msg and "fix:" in msg, msg
    for w in words:
        assert w in msg, msg


def test_bad_files_and_pairs(tmp_path):
    from serendip.retriever import RetrieverConfig

    with pytest.raises(ConfigError, match="--config.*does not exist"):
        load_config(RetrieverConfig, tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        load_config(RetrieverConfig, tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(RetrieverConfig, tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="--set"):
        load_config(RetrieverConfig, sets=["epochs"])
    with pytest.raises(ConfigError, match="unknown config section 'finetuen'.*finetune"):
        section_class("finetuen")


def test_the_prompt_manifest_is_read_by_the_same_loader():
    from serendip.prompts import PromptConfig, read_prompt_manifest

    doc = {"prompt": {"strategy": "video", "n_frames": 2, "use_thumbnail": False}}
    assert read_prompt_manifest(doc, "curation.json", "re-curate") == PromptConfig("video", 2)
    for manifest, field, words in (({"n_frame": 2}, "prompt.n_frame", "unknown setting"),
                                   ({"n_frames": [2]}, "prompt.n_frames", "an integer"),
                                   ({"strategy": "audio"}, "prompt.strategy", "audio")):
        with pytest.raises(ConfigError) as e:
            read_prompt_manifest({"prompt": manifest}, "curation.json", "re-curate")
        msg = str(e.value)
        assert msg.startswith(f"{field}: curation.json: ") and words in msg, msg


def test_a_tree_saved_before_threads_became_a_flag_still_loads(tmp_path):
    """``threads`` (faiss threads) left ClusterConfig for a keyword of cluster_stage /
    build_cluster_tree; trees saved with it in their config load as before."""
    import json

    import numpy as np
    import pyarrow as pa

    from serendip.tree import ClusterConfig, ClusterTree, build_cluster_tree

    n = 48
    items = pa.table({"item_id": [f"i{i}" for i in range(n)],
                      "title": [f"video number {i}" for i in range(n)],
                      "impressions": pa.array(np.arange(1, n + 1), pa.int64())})
    emb = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    tree = build_cluster_tree(items, emb, ClusterConfig(branching=(2, 2, 2, 2)), threads=1)
    tree.save(tmp_path / "t")
    doc = json.loads((tmp_path / "t" / "tree.json").read_text())
    doc["config"]["threads"] = 4
    (tmp_path / "t" / "tree.json").write_text(json.dumps(doc))
    assert ClusterTree.load(tmp_path / "t").config == tree.config
    with pytest.raises(ConfigError, match="threads"):
        load_config(ClusterConfig, sets=["threads=4"])      # a flag now: --threads


# ---------------------------------------------------------------- every config class
def _config_classes() -> list[type]:
    """Every config dataclass reachable from SECTIONS, nested ones included."""
    seen: list[type] = []

    def walk(cls: type) -> None:
        if cls in seen:
            return
        seen.append(cls)
        import typing

        for f in dataclasses.fields(cls):
            typ = typing.get_type_hints(cls)[f.name]
            arms = typing.get_args(typ) or (typ,)
            for arm in arms:
                if dataclasses.is_dataclass(arm):
                    walk(arm)

    for name in SECTIONS:
        walk(section_class(name))
    return seen


def test_every_config_dataclass_in_the_library_is_a_section():
    """Each ``@dataclass class ...Config`` under serendip/ is listed (directly or nested)."""
    found = set()
    for path in (ROOT / "serendip").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Config") and any(
                    "dataclass" in ast.unparse(d) for d in node.decorator_list):
                found.add(node.name)
    listed = {c.__name__ for c in _config_classes()}
    assert found - listed == set(), f"add to serendip.config.SECTIONS: {sorted(found - listed)}"


def test_every_field_of_every_config_has_help():
    missing = [f"{cls.__name__}.{f.name}" for cls in _config_classes()
               for f in dataclasses.fields(cls) if f.init and not f.metadata.get("help", "").strip()]
    assert missing == []


def test_every_config_validates_on_construction():
    """``__post_init__`` runs the checks: a bad value fails where the config is built."""
    from serendip.mllm.config import FinetuneConfig

    with pytest.raises(ConfigError, match="lr"):
        FinetuneConfig(lr=-1)
    no_check = [cls.__name__ for cls in _config_classes()
                if getattr(cls, "__post_init__", None) is None]
    assert no_check == []
    bad = {"SynthConfig": {"users": 0}, "RecBoleImportConfig": {"rating_scale": (5.0, 1.0)},
           "ClusterConfig": {"balance_tol": 0.5}, "EmbeddingConfig": {"w_text": -1.0},
           "CurationConfig": {"top_k": 0}, "PromptConfig": {"strategy": "audio"},
           "TinyVLMConfig": {"text_heads": 3}, "BaseConfig": {"text_layers": 0},
           "AblationConfig": {"steps": 0}, "RetrieverConfig": {"heads": 3},
           "ReplayConfig": {"k": 0}, "OnlineSimConfig": {"seeds": ()},
           "BlendConfig": {"k": 0}, "ServeConfig": {"workdir": Path("/nonexistent")},
           "SatisfactionModel": {"noise": 2.0}, "PolicyModel": {"same_leaf": 1.5},
           "ScoringConfig": {"coverage": 2.0}, "FixtureConfig": {"items": 0},
           "ScoringFixtureConfig": {"sharpen": 0.0}}
    for cls in _config_classes():
        if cls.__name__ in bad:
            with pytest.raises(ConfigError):
                cls(**bad[cls.__name__])


# ---------------------------------------------------------------- listing and docs
def test_config_list_prints_every_setting(capsys):
    from serendip.cli import main
    from serendip.mllm.config import FinetuneConfig

    assert main(["config", "--list", "finetune"]) == 0
    out = capsys.readouterr().out
    for row in settings_rows(FinetuneConfig):
        assert row["name"] in out and row["help"] in out
    assert "prompt.strategy" in out and "tiny.text_hidden" in out
    assert main(["config", "--list", "nope"]) == 2
    assert "SECTION" in capsys.readouterr().err


def test_settings_doc_is_current():
    assert DOC.exists() and DOC.read_text() == settings_markdown(), f"fix: run `{REGENERATE}`"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(settings_markdown())
    print(f"wrote {DOC}")
