"""Every kustomization builds: with `kustomize` when installed, otherwise a Python check that
resolves resources and patches and validates each document's shape."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1] / "manifests"
KUSTOMIZATIONS = sorted(p.parent for p in ROOT.rglob("kustomization.yaml"))


def _resources(kdir: Path, seen=None) -> list[dict]:
    """Resolve a kustomization's resources recursively into YAML documents."""
    seen = seen or set()
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    assert k["apiVersion"].startswith("kustomize.config.k8s.io/") and k["kind"] == "Kustomization"
    docs = []
    for res in k.get("resources", []):
        path = (kdir / res).resolve()
        assert path.exists(), f"{kdir}/kustomization.yaml references missing {res}"
        if path.is_dir():
            assert path not in seen, f"cycle at {path}"
            docs += _resources(path, seen | {path})
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch in k.get("patches", []):
        assert (kdir / patch["path"]).exists(), f"missing patch {patch['path']}"
    return docs


@pytest.mark.parametrize("kdir", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(ROOT)) or "base")
def test_kustomization_builds(kdir):
    if shutil.which("kustomize"):
        subprocess.run(["kustomize", "build", str(kdir)], check=True, capture_output=True)
    docs = _resources(kdir)
    assert docs
    names = set()
    for d in docs:
        assert d.get("apiVersion") and d.get("kind"), d
        assert d.get("metadata", {}).get("name"), d
        key = (d["kind"], d["metadata"]["name"])
        assert key not in names, f"duplicate {key}"
        names.add(key)


def test_workloads_are_non_root_with_limits_and_probes():
    for d in _resources(ROOT):
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        spec = d["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, d["metadata"]["name"]
        for c in spec["containers"]:
            assert c["resources"]["limits"], (d["metadata"]["name"], c["name"])
            assert "readinessProbe" in c, (d["metadata"]["name"], c["name"])


def test_base_includes_every_component():
    kinds = {(d["kind"], d["metadata"]["name"]) for d in _resources(ROOT)}
    assert ("Deployment", "mlflow") in kinds and ("Deployment", "redis") in kinds
    assert ("Job", "submit-serendip-training") in kinds


def _resolve(doc, pointer: str):
    node = doc
    for part in pointer.strip("/").split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def test_overlay_json_patches_apply_to_their_targets():
    """kustomize fails a JSON6902 `remove`/`replace` whose path is missing: check every one."""
    for kdir in KUSTOMIZATIONS:
        k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
        for patch in k.get("patches", []):
            ops = yaml.safe_load((kdir / patch["path"]).read_text())
            targets = [d for d in _resources(kdir) if d["kind"] == patch["target"]["kind"]]
            assert targets, patch
            for doc in targets:
                for op in ops:
                    if op["op"] in ("remove", "replace"):
                        _resolve(doc, op["path"])  # KeyError = kustomize build would fail
