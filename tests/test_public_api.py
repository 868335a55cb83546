"""Issue 13, step 6: the public face. ``from serendip import …`` gives the paper's stages and
their configs, loaded lazily (``import serendip`` stays instant), and the README's Python API
example runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ["build_cluster_tree", "curate", "finetune", "ClusterPredictor", "score_items",
          "train_retriever", "match_rate", "recall", "ClusterConfig", "EmbeddingConfig",
          "CurationConfig", "FinetuneConfig", "ScoringConfig", "RetrieverConfig",
          "PromptConfig", "cluster_stage", "curate_stage", "finetune_stage", "evaluate_stage",
          "retriever_stage", "SerendipError", "ConfigError", "SchemaError"]
HEAVY = ("torch", "pandas", "sklearn", "numpy", "pyarrow", "transformers", "mlflow", "kfp")


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_import_serendip_loads_no_heavy_dependency():
    loaded = json.loads(_python("import json, sys, serendip\n"
                                f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"))
    assert loaded == []


def test_public_names_are_the_library_entries():
    code = ("import json, serendip\n"
            f"names = {PUBLIC!r}\n"
            "assert set(names) <= set(serendip.__all__) and set(names) <= set(dir(serendip))\n"
            "print(json.dumps({n: getattr(serendip, n).__module__ for n in names}))")
    where = json.loads(_python(code))
    assert where["finetune"] == "serendip.mllm.train"
    assert where["curate"] == "serendip.curation.stage"
    assert where["build_cluster_tree"] == "serendip.tree.build"
    assert where["finetune_stage"] == "serendip.mllm.stage"
    assert where["evaluate_stage"] == "serendip.evaluation.offline"
    assert where["match_rate"] == where["recall"] == "serendip.metrics"
    assert not any(m.startswith(("serendip.commands", "serendip.cli")) for m in where.values())
    import serendip
    from serendip.tree import ClusterConfig

    assert serendip.ClusterConfig is ClusterConfig
    with pytest.raises(AttributeError, match="no_such_name"):
        serendip.no_such_name  # noqa: B018


ENTRIES = ["build_cluster_tree", "cluster_stage", "serendipitous_pairs", "curate", "curate_stage",
           "finetune", "finetune_stage", "ClusterPredictor", "score_items", "train_retriever",
           "retriever_stage", "match_rate", "recall", "recall_at_k", "evaluate_stage"]


def test_public_entries_document_errors_and_paper_section():
    import inspect

    import serendip

    missing = {name: [part for part in ("Raises:", "§")
                      if part not in (inspect.getdoc(getattr(serendip, name)) or "")]
               for name in ENTRIES}
    assert not {k: v for k, v in missing.items() if v}


def _readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_python_api_example_runs(tmp_path):
    blocks = _readme_python_blocks()
    assert len(blocks) == 1 and "finetune_stage" in blocks[0]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SERENDIP_TORCH_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "1"}
    code = "import torch\ntorch.set_num_threads(1)\n" + blocks[0]
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "recall" in out.stdout
    model_dirs = list((tmp_path / "work" / "mllm").glob("*/serendip.json"))
    assert len(model_dirs) == 1          # the stage wrote one model directory, nothing else
