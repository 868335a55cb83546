"""The component image, built and run for real (issue 17 item 5).

Builds the CPU image from ``docker/Dockerfile`` with ``docker/build_image.sh`` (buildah,
``--isolation chroot``, a debootstrap Debian base where Docker Hub is out of reach; cached
layers after the first build) and runs the ``cluster`` component inside it with
``buildah run --isolation chroot``: the command line is the one in the compiled KFP IR, the
executor input is built by KFP's own helpers, as KFP's launcher would hand them to the pod.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(5400)]

ROOT = Path(__file__).resolve().parents[1]
TAG = os.environ.get("SERENDIP_TEST_IMAGE", "localhost/serendip:test")
BASES = ("python:3.11-slim", "localhost/debian-base:bookworm")


def _buildah(*args, **kw):
    return subprocess.run(["buildah", "--storage-driver", "vfs", *args], text=True,
                          capture_output=True, **kw)


def _skip_reason() -> str | None:
    if shutil.which("buildah") is None:
        return "buildah is not installed (apt-get install buildah)"
    if os.geteuid() != 0:
        return "the image build runs buildah as root (rootless buildah needs subuid/subgid ranges)"
    if shutil.which("debootstrap") is None and not any(
            _buildah("inspect", "--type", "image", b).returncode == 0 for b in BASES):
        if _buildah("pull", "-q", BASES[0], timeout=900).returncode != 0:
            return ("python:3.11-slim cannot be pulled, no local base image and no debootstrap "
                    "to make one (apt-get install debootstrap)")
    return None


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """The CPU image, built (or refreshed from cached layers) by docker/build_image.sh."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("image") / "build.log"
    env = {**os.environ, "SERENDIP_IMAGE_BUILDER": "buildah"}
    with open(log, "w") as fh:
        proc = subprocess.run([str(ROOT / "docker" / "build_image.sh"), "--tag", TAG],
                              cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=5000)
    assert proc.returncode == 0, "image build failed:\n" + "".join(log.read_text().splitlines(True)[-30:])
    return TAG


@pytest.fixture(scope="module")
def container(image):
    """A working container of the image (one per module: with vfs storage each one is a full
    copy of the file system), removed afterwards."""
    made = _buildah("from", "--pull-never", image)
    assert made.returncode == 0, made.stderr
    name = made.stdout.strip().splitlines()[-1]
    yield name
    _buildah("rm", name)


def _run(container: str, *cmd: str, volumes=(), timeout=900) -> subprocess.CompletedProcess:
    vols = [a for v in volumes for a in ("-v", f"{v}:{v}")]
    return _buildah("run", "--isolation", "chroot", *vols, container, "--", *cmd, timeout=timeout)


def test_image_has_cpu_torch_the_stack_and_a_non_root_user(container):
    probe = ("import json, os, torch, kfp, serendip, serendip.platform.kfp.pipelines.training; "
             "from serendip.platform.features import source_repo; "
             "from serendip.serving.repository import template_dir; "
             "print(json.dumps(dict(torch=torch.__version__, cuda=torch.version.cuda, "
             "uid=os.getuid(), kfp=kfp.__version__, feast=str(source_repo()), "
             "templates=str(template_dir()))))")
    out = _run(container, "python3", "-c", probe)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["torch"].startswith("2.13.0") and got["cuda"] is None  # the CPU build
    assert got["uid"] == 1000
    # templates are package data of the installed (non-editable) package
    site = "/opt/venv/lib/python3.11/site-packages/serendip/"
    assert got["feast"] == site + "platform/feature_repo"
    assert got["templates"] == site + "serving/model_repository"
    cli = _run(container, "serendip", "--help")
    assert cli.returncode == 0 and "cluster" in cli.stdout


def test_cluster_component_runs_in_the_image_as_kfp_runs_it(container, synth_dir, tmp_path):
    import yaml
    from kfp import compiler, dsl
    from kfp.components import load_component_from_file
    from kfp.local import executor_input_utils, placeholder_utils

    from serendip.data.io import read_table
    from serendip.platform.kfp.components.cluster import cluster

    ir = tmp_path / "cluster.yaml"
    compiler.Compiler().compile(cluster, str(ir))
    spec = yaml.safe_load(ir.read_text())
    exe = spec["deploymentSpec"]["executors"]["exec-cluster"]["container"]
    comp_spec = load_component_from_file(str(ir)).pipeline_spec.components["comp-cluster"]

    work = tmp_path / "kfp"  # mounted at the same path, writable by the image's uid 1000
    data = work / "data"
    shutil.copytree(synth_dir, data)
    task_root = work / "cluster"
    task_root.mkdir()
    for p in [work, *work.rglob("*")]:
        p.chmod(0o777 if p.is_dir() else 0o666)

    args = {"data": dsl.Dataset(name="data", uri=str(data)), "branching": "2/2/3/2",
            "settings": {"embedding.text_encoder": "tfidf"}}
    ex_in = executor_input_utils.construct_executor_input(
        component_spec=comp_spec, arguments=args, task_root=str(task_root),
        block_input_artifact=False)
    ex_in_dict = executor_input_utils.executor_input_to_dict(ex_in, comp_spec)
    cmd = placeholder_utils.replace_placeholders(
        full_command=[*exe["command"], *exe["args"]], executor_input_dict=ex_in_dict,
        pipeline_resource_name="image-test", task_resource_name="cluster",
        pipeline_root=str(work), unique_pipeline_id="image-test")
    assert cmd[0] == "sh" and "kfp.dsl.executor_main" in cmd[2]

    res = _run(container, *cmd, volumes=[work])
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]

    out = json.loads((task_root / "executor_output.json").read_text())
    stats = json.loads(out["parameterValues"]["Output"])
    assert sorted(stats) == ["level1", "level2", "level3", "level4"]
    tree = task_root / "tree"
    items = read_table(data, "items")
    clusters = read_table(tree, "clusters")
    assert clusters.num_rows == 2 + 4 + 12 + 24
    assert read_table(tree, "item_clusters", refs={"items": items}).num_rows == items.num_rows
    assert (tree / "cluster_tree" / "tree.json").exists()
    metrics = out["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert "level4_sibling_traffic_ratio_worst" in metrics
