"""Prometheus metrics of the recommend transformer (issue 17 item 3): a scrape of /metrics
(KServe's own endpoint, on the REST port) after known requests shows the counters moved by
exactly the right amounts — requests by outcome, phases, cluster sources, cache hits."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from serving_fixtures import scored_items, unscored_items

from serendip.platform.serving.harness import ServeProcess

parser = pytest.importorskip("prometheus_client.parser")


@pytest.fixture(scope="module")
def server(served_wd):
    wd = served_wd
    s = ServeProcess(wd, "kserve", extra=["--features", "feast"]).start()
    yield s, wd
    s.stop()


def scrape_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def _scrape(http: str) -> dict[tuple, float]:
    return parse(scrape_text(f"http://{http}/metrics"))


def parse(text: str) -> dict[tuple, float]:
    """Prometheus text → {(sample name, sorted labels): value}."""
    out = {}
    for fam in parser.text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _recommend(http: str, item: str, k: int = 3) -> int:
    body = json.dumps({"inputs": [
        {"name": "ITEM_ID", "shape": [1, 1], "datatype": "BYTES", "data": [item]},
        {"name": "K", "shape": [1, 1], "datatype": "INT32", "data": [k]}]}).encode()
    req = urllib.request.Request(f"http://{http}/v2/models/recommend/infer", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _get(m, name, **labels):
    return m.get((name, tuple(sorted(dict(labels, model_name="recommend").items()))), 0.0)


@pytest.mark.slow          # its own server start; the Triton tests run the same checks
def test_metrics_count_requests_phases_sources_and_cache(server):
    check_metrics(*server)


def check_metrics(s: ServeProcess, wd) -> None:
    """Known requests against the recommend transformer of ``s``; its /metrics moved by
    exactly the right amounts."""
    hit, miss = scored_items(wd)[10], unscored_items(wd)[10]
    before = _scrape(s.http)
    assert [_recommend(s.http, hit) for _ in range(3)] == [200, 200, 200]   # feast, cache x2
    assert _recommend(s.http, miss) == 200                                   # mllm
    assert _recommend(s.http, "no-such-item") == 400                         # unknown item
    assert _recommend(s.http, hit, k=0) == 400                               # bad K
    after = _scrape(s.http)

    def delta(name, **labels):
        return _get(after, name, **labels) - _get(before, name, **labels)

    assert delta("serendip_recommend_requests_total", outcome="ok") == 4
    assert delta("serendip_recommend_requests_total", outcome="client_error") == 2
    assert delta("serendip_recommend_requests_total", outcome="server_error") == 0
    assert delta("serendip_cluster_choice_total", source="feast") == 1
    assert delta("serendip_cluster_choice_total", source="cache") == 2
    assert delta("serendip_cluster_choice_total", source="mllm") == 1
    assert delta("serendip_cluster_cache_lookups_total", result="hit") == 2
    assert delta("serendip_cluster_cache_lookups_total", result="miss") == 3
    assert delta("serendip_recommend_phase_seconds_count", phase="lookup") == 3
    assert delta("serendip_recommend_phase_seconds_count", phase="mllm") == 1
    # two retriever calls per answered request: the cluster's items and the unrestricted top
    # items of the blended slate (issue 15)
    assert delta("serendip_recommend_phase_seconds_count", phase="retriever") == 8
    assert delta("serendip_recommend_phase_seconds_sum", phase="retriever") > 0
    assert delta("serendip_online_store_errors_total") == 0
    hits = _get(after, "serendip_cluster_cache_lookups_total", result="hit")
    lookups = hits + _get(after, "serendip_cluster_cache_lookups_total", result="miss")
    assert _get(after, "serendip_cluster_cache_hit_ratio") == pytest.approx(hits / lookups)
    # KServe's own histogram sits beside ours on the same endpoint
    assert delta("request_predict_seconds_count") == 6


def test_manifests_carry_scrape_annotations():
    """Every served component is scraped where its metrics live: the transformer on its
    REST port (KServe's /metrics), Triton predictors on Triton's metrics port (8002)."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1] / "manifests" / "kserve"
    seen = {}
    for path in sorted(root.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "InferenceService":
                continue
            meta = doc["metadata"].get("annotations") or {}
            assert meta.get("serving.kserve.io/enable-prometheus-scraping") == "true", path
            for comp, spec in doc["spec"].items():
                ann = {**meta, **(spec.get("annotations") or {})}
                want = "8080" if comp == "transformer" else "8002"
                if comp == "transformer":
                    ports = [p["containerPort"] for c in spec["containers"]
                             for p in c.get("ports", [])]
                    assert int(want) in ports, path
                for key in ("prometheus.io", "prometheus.kserve.io"):
                    assert ann.get(f"{key}/port") == want, (path, comp, key)
                    assert ann.get(f"{key}/path") == "/metrics", (path, comp, key)
                assert ann.get("prometheus.io/scrape") == "true", (path, comp)
                seen[(doc["metadata"]["name"], comp)] = want
    assert seen == {("serendip-mllm", "predictor"): "8002",
                    ("serendip-retriever", "predictor"): "8002",
                    ("serendip-recommend", "transformer"): "8080",
                    ("serendip-recommend", "predictor"): "8002"}
