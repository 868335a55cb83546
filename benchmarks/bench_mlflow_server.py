"""The registry against a real MLflow tracking server over HTTP vs the embedded sqlite store.

A local ``mlflow server`` (127.0.0.1, free port, own sqlite store, ``--serve-artifacts``) is
started and timed to ready; then the same registry work runs against it and against a sqlite
file: register a saved retriever (run + params + metrics + pyfunc model + version + tags +
@challenger), resolve @challenger, run the gate (@champion), download the champion's artifacts
(what ``serendip export`` does). Reported: seconds per operation on each store and their ratio.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path


def _fake_retriever(d: Path, mb: float) -> Path:
    """A directory shaped like a saved retriever (the registry only checks the files)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"dim": 32}))
    (d / "model.safetensors").write_bytes(os.urandom(int(mb * 2**20)))
    return d


def _work(wd: Path, retriever: Path, n: int) -> dict:
    import mlflow

    from serendip.platform import registry, retriever_registry

    registry.setup(wd)
    t = {}
    t0 = time.perf_counter()
    # the gate also needs the in-cluster popularity baseline it must beat (issue 15)
    versions = [retriever_registry.register_retriever(retriever, {"ndcg@10": 0.1 + i / 100,
                                                                  "popularity_ndcg@10": 0.05},
                                                      wd, params={"dim": 32})
                for i in range(n)]
    t["register_s"] = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(20):
        registry.resolve_version(retriever_registry.RETRIEVER, "@challenger")
    t["resolve_alias_s"] = (time.perf_counter() - t0) / 20
    t0 = time.perf_counter()
    registry.promote(retriever_registry.RETRIEVER, versions[-1], metric="ndcg_at_10",
                     workdir=wd)
    t["gate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as dst:
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{retriever_registry.RETRIEVER}@champion", dst_path=dst)
    t["download_champion_s"] = time.perf_counter() - t0
    return {k: round(v, 4) for k, v in t.items()}


def run(quick: bool = False) -> dict:
    from serendip.platform.mlflow_server import start_mlflow_server

    n = 2 if quick else 5
    mb = 1.0 if quick else 8.0
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    out: dict = {"registrations": n, "artifact_mb": mb}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        retriever = _fake_retriever(tmp / "retriever", mb)
        out["sqlite"] = _work(tmp / "local", retriever, n)
        t0 = time.perf_counter()
        server = start_mlflow_server(tmp / "server")
        out["server_startup_s"] = round(time.perf_counter() - t0, 2)
        try:
            os.environ["MLFLOW_TRACKING_URI"] = server.uri
            out["http"] = _work(tmp / "remote", retriever, n)
        finally:
            server.stop()
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            if saved is not None:
                os.environ["MLFLOW_TRACKING_URI"] = saved
    out["http_over_sqlite"] = {k: round(out["http"][k] / out["sqlite"][k], 2)
                               for k in out["http"] if out["sqlite"][k] > 0}
    return out
