"""Every kustomization builds: with real kustomize (`kustomize build`, or the copy built into
`kubectl kustomize`) when installed, and always with a Python check that resolves resources
and patches and validates each document's shape."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1] / "manifests"
BASE = ROOT / "base"
KUSTOMIZATIONS = sorted(p.parent for p in ROOT.rglob("kustomization.yaml"))


def _kustomize() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def _build(kdir: Path) -> list[dict]:
    """The documents real kustomize renders for ``kdir``."""
    cmd = _kustomize()
    r = subprocess.run([*cmd, str(kdir)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"kustomize build {kdir.relative_to(ROOT)} failed: {r.stderr}"
    return [d for d in yaml.safe_load_all(r.stdout) if d]


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
    if _kustomize():
        assert _build(kdir)
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
    for d in _resources(BASE):
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        spec = d["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, d["metadata"]["name"]
        for c in spec["containers"]:
            assert c["resources"]["limits"], (d["metadata"]["name"], c["name"])
            assert "readinessProbe" in c, (d["metadata"]["name"], c["name"])


def test_base_includes_every_component():
    kinds = {(d["kind"], d["metadata"]["name"]) for d in _resources(BASE)}
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


def _images(docs: list[dict]) -> set[str]:
    found: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("image"), str):
                found.add(node["image"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(docs)
    return found


@pytest.mark.skipif(_kustomize() is None, reason="neither kustomize nor kubectl installed")
def test_overlays_render_what_they_promise():
    """The README's `kustomize build manifests/overlays/...` output, checked: production pins
    every serendip image to the registry and keeps GPU requests; local drops every GPU trace."""
    gpu, local = _build(ROOT / "overlays" / "gpu"), _build(ROOT / "overlays" / "local")
    ours = {i for i in _images(gpu) if "serendip" in i}
    assert ours and all(i.startswith("registry.example.com/") and i.endswith(":0.1.0")
                        for i in ours), ours
    assert "nvidia.com/gpu" in yaml.safe_dump_all(gpu)
    assert {d["metadata"].get("namespace") for d in gpu if d["kind"] != "Namespace"} == {"serendip"}
    text = yaml.safe_dump_all(local)
    assert "nvidia.com/gpu" not in text and "serendip.io/pool" not in text
    assert not {i for i in _images(local) if "serendip-gpu" in i}
    assert {d["kind"] for d in local} >= {"InferenceService", "Deployment", "StatefulSet", "Job"}
