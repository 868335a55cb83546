"""The cluster and curate KFP components, run with kfp.local (SubprocessRunner, no venv)."""

import json
from pathlib import Path

import pytest

kfp = pytest.importorskip("kfp")

from kfp import dsl, local  # noqa: E402
from kfp.dsl import Dataset, Output  # noqa: E402

from serendip.data.io import read_table  # noqa: E402
from serendip.platform.kfp.components import COMPONENT_KW, IMAGE  # noqa: E402
from serendip.platform.kfp.components.cluster import cluster  # noqa: E402
from serendip.platform.kfp.components.curate import curate  # noqa: E402


@dsl.component(**COMPONENT_KW)
def _load_dir(uri: str, data: Output[Dataset]):
    """Test helper: a local directory as a Dataset artifact."""
    import shutil

    shutil.copytree(uri, data.path)


@dsl.pipeline
def _cluster_and_curate(uri: str) -> str:
    data = _load_dir(uri=uri)
    tree = cluster(data=data.outputs["data"], branching="2/2/3/2",
                   settings={"embedding.text_encoder": "tfidf"})
    cur = curate(data=data.outputs["data"], tree=tree.outputs["tree"], level=3, delta=1,
                 top_k=10, strategy="cot", n_frames=2)
    return cur.outputs["Output"]


def test_components_use_the_project_image_and_install_nothing():
    for comp in (cluster, curate):
        spec = comp.component_spec.implementation.container
        assert spec.image == IMAGE
        assert "pip install" not in " ".join(spec.command or [])
    inputs = cluster.component_spec.inputs
    outputs = cluster.component_spec.outputs
    assert inputs["data"].type.startswith("system.Dataset")
    assert outputs["tree"].type.startswith("system.Dataset")
    assert curate.component_spec.inputs["tree"].type.startswith("system.Dataset")


def test_cluster_and_curate_run_with_kfp_local(synth_dir, tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path),
               raise_on_error=True)
    task = _cluster_and_curate(uri=str(synth_dir))
    stats = json.loads(task.output)
    assert stats["pairs"]["serendipitous"]["pairs"] > 0
    assert stats["examples_per_cluster_max"] <= 10
    tree_dir = next(Path(tmp_path).rglob("cluster/tree"))
    ex_dir = next(Path(tmp_path).rglob("curate/examples"))
    items = read_table(synth_dir, "items")
    clusters = read_table(tree_dir, "clusters")
    assert clusters.num_rows == 2 + 4 + 12 + 24
    assert read_table(tree_dir, "item_clusters", refs={"items": items}).num_rows == items.num_rows
    assert (tree_dir / "cluster_tree" / "tree.json").exists()
    ex = read_table(ex_dir, "examples", refs={"items": items, "clusters": clusters})
    assert ex.num_rows == stats["selected_pairs"] > 0
    doc = json.loads((ex_dir / "curation.json").read_text())
    assert doc["prompt"] == {"strategy": "cot", "n_frames": 2, "use_thumbnail": False}
