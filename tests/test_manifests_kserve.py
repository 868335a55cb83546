"""manifests/kserve: the InferenceServices validate against the KServe v1beta1 schema shape (the
SDK's generated models: every field known, nested types right, required fields present) and
carry what production needs — Triton runtime, v2, storageUri, GPUs on the GPU pool, probes,
non-root, limits, autoscaling, the Feast secret — and the transformer's entry point runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
KDIR = ROOT / "manifests" / "kserve"
ISVC_FILES = ("mllm.yaml", "retriever.yaml", "recommend.yaml")


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((KDIR / name).read_text()) if d]


def _isvcs() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for f in ISVC_FILES for d in _docs(f)
            if d["kind"] == "InferenceService"}


def _model_class(type_name: str):
    import kserve.models as km
    from kubernetes import client as kc

    return getattr(km, type_name, None) or getattr(kc, type_name)


def check_shape(value, type_name: str, path: str = "") -> None:
    """``value`` (parsed YAML) conforms to the generated OpenAPI model ``type_name``."""
    if type_name.startswith("list["):
        assert isinstance(value, list), f"{path}: expected a list"
        for i, v in enumerate(value):
            check_shape(v, type_name[5:-1], f"{path}[{i}]")
        return
    if type_name.startswith("dict("):
        assert isinstance(value, dict), f"{path}: expected a mapping"
        inner = type_name[5:-1].split(", ", 1)[1]
        for k, v in value.items():
            check_shape(v, inner, f"{path}.{k}")
        return
    prim = {"str": str, "int": int, "bool": bool, "float": (int, float), "datetime": str}
    if type_name in prim:
        assert isinstance(value, prim[type_name]) and not (
            type_name == "int" and isinstance(value, bool)), f"{path}: expected {type_name}"
        return
    if type_name == "object":          # IntOrString, Quantity, free-form
        return
    cls = _model_class(type_name)
    assert isinstance(value, dict), f"{path}: expected a {type_name} mapping"
    by_json = {j: a for a, j in cls.attribute_map.items()}
    for key, v in value.items():
        assert key in by_json, f"{path}.{key}: not a field of {type_name}"
        check_shape(v, cls.openapi_types[by_json[key]], f"{path}.{key}")


@pytest.mark.parametrize("name", ["serendip-mllm", "serendip-retriever", "serendip-recommend"])
def test_inference_service_matches_the_kserve_schema(name):
    d = _isvcs()[name]
    assert d["apiVersion"] == "serving.kserve.io/v1beta1" and d["kind"] == "InferenceService"
    check_shape(d, "V1beta1InferenceService", name)
    assert d["metadata"]["name"] and "predictor" in d["spec"]


@pytest.mark.parametrize("name", ["serendip-mllm", "serendip-retriever", "serendip-recommend"])
def test_triton_predictor_on_gpu_nodes(name):
    p = _isvcs()[name]["spec"]["predictor"]
    m = p["model"]
    assert m["modelFormat"]["name"] == "triton" and m["runtime"] == "kserve-tritonserver"
    assert m["protocolVersion"] == "v2"
    assert re.match(r"^(s3|gs|pvc|https?)://.+/model_repository$", m["storageUri"])
    for part in ("requests", "limits"):
        assert m["resources"][part]["nvidia.com/gpu"] == "1"
        assert m["resources"][part]["cpu"] and m["resources"][part]["memory"]
    assert p["nodeSelector"] == {"serendip.io/pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} \
        in p["tolerations"]
    assert "readinessProbe" in m
    assert p["securityContext"]["runAsNonRoot"] is True and p["securityContext"]["runAsUser"]
    assert m["securityContext"]["allowPrivilegeEscalation"] is False
    assert 1 <= p["minReplicas"] <= p["maxReplicas"] and p["scaleMetric"] and p["scaleTarget"]
    assert p["serviceAccountName"] == "serendip-models"
    # the models a predictor loads exist in the committed repository
    for arg in m.get("args", []):
        if arg.startswith("--load-model="):
            templates = ROOT / "serendip" / "serving" / "model_repository"
            assert (templates / arg.split("=", 1)[1] / "config.pbtxt").exists()


def test_recommend_is_a_transformer_in_front_of_triton_with_the_feast_secret():
    from serendip.platform.serving.transformer import parse_args

    spec = _isvcs()["serendip-recommend"]["spec"]
    t = spec["transformer"]
    (c,) = t["containers"]
    assert c["image"] == "serendip" and c["command"][-1] == "serendip.platform.serving.transformer"
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e}
    assert "feast-online-store" in secrets
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["resources"]["limits"]["cpu"] and c["resources"]["limits"]["memory"]
    assert t["securityContext"]["runAsNonRoot"] is True
    assert 1 <= t["minReplicas"] <= t["maxReplicas"]
    # KServe appends --model_name/--predictor_host/--http_port to the container's args
    args = parse_args(c["args"] + ["--model_name", "serendip-recommend", "--predictor_host",
                                   "serendip-recommend-predictor.serendip", "--http_port",
                                   "8080"])
    assert args.feature_repo == "/feature_repo" and args.predictor_protocol == "grpc-v2"
    mounts = {v["name"] for v in t["volumes"]}
    assert "feast-repo" in mounts
    # gRPC between transformer and predictor
    assert spec["predictor"]["model"]["ports"][0]["name"] == "h2c"


def test_kustomization_lists_everything_and_overlays_apply():
    k = yaml.safe_load((KDIR / "kustomization.yaml").read_text())
    assert set(ISVC_FILES) <= set(k["resources"])
    for res in k["resources"] + k.get("configurations", []):
        assert (KDIR / res).exists(), res
    names = [d["metadata"]["name"] for f in k["resources"] for d in _docs(f)]
    assert len(names) == len(set(names))
    assert not [d for f in k["resources"] for d in _docs(f) if d["kind"] == "Secret"], \
        "secrets are created out of band, never committed"
    # the local (CPU) overlay removes/replaces these paths on every InferenceService
    for d in _isvcs().values():
        p = d["spec"]["predictor"]
        assert "nodeSelector" in p and "tolerations" in p and "resources" in p["model"]
