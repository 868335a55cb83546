"""``serendip serve``: start the serving stack for a work directory.

* backend ``triton`` — a real ``tritonserver`` (pytriton wheel, ``.venv-triton``) serves
  ``mllm`` and ``retriever`` from ``<workdir>/model_repository``; in front of it the
  ``recommend`` KServe transformer (this process) does the cluster lookup and calls Triton over
  gRPC. This is the production layout (InferenceService ``spec.transformer`` + Triton
  ``spec.predictor``), on one machine.
* backend ``kserve`` — the fallback: one KServe ModelServer serves ``mllm``, ``retriever`` and
  ``recommend`` (which calls the other two in process). Same tensors, same errors.
* ``auto`` (default) — ``triton`` when the Triton venv is usable, else ``kserve`` (also when
  Triton fails to come up: the reason is printed, the fallback serves).

Everything binds 127.0.0.1 by default (kserve's own ModelServer would bind 0.0.0.0; see
:class:`~serendip.platform.serving.kserve_server.LoopbackModelServer`). SIGTERM or SIGINT stops
the KServe server, then Triton (SIGTERM), and ``serve`` returns.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from serendip.errors import ConfigError, SerendipError
from serendip.platform.serving.ports import check_ports_free
from serendip.serving.repository import (
    MODELS,
    ExportSource,
    export_recommend_snapshot,
    export_repository,
    exported_versions,
    latest_mllm_dir,
)

BACKENDS = ("auto", "triton", "kserve")


@dataclass
class ServeConfig:
    """The model server's deployment settings (``serendip serve``); validated on construction."""

    workdir: Path = field(metadata={
        "help": "work directory with the exported models and the tables (required)"})
    backend: str = field(default="auto", metadata={
        "help": "auto (Triton when installed, else KServe) | triton | kserve"})
    host: str = field(default="127.0.0.1", metadata={"help": "address the servers bind"})
    http_port: int = field(default=8080, metadata={
        "help": "v2 REST port of recommend (and, for kserve, of all models); 1..65535"})
    grpc_port: int = field(default=8081, metadata={"help": "v2 gRPC port; 1..65535"})
    triton_http_port: int = field(default=8000, metadata={
        "help": "Triton's own HTTP port; 1..65535, distinct from the others"})
    triton_grpc_port: int = field(default=8001, metadata={
        "help": "Triton's own gRPC port; 1..65535, distinct from the others"})
    triton_metrics_port: int = field(default=8002, metadata={
        "help": "Triton's Prometheus metrics port; 1..65535, distinct from the others"})
    features: str = field(default="auto", metadata={
        "help": "where item clusters are read: auto (Feast when its repo exists) | feast | "
                "table (item_serendipity)"})
    cache_ttl_s: float = field(default=300.0, metadata={
        "help": "time an item's cluster stays in the in-process cache, in seconds; >= 0"})
    triton_venv: str | None = field(default=None, metadata={
        "help": "the Triton venv (null: .venv-triton or $SERENDIP_TRITON_VENV)"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}", field="backend",
                              fix=f"use one of {', '.join(BACKENDS)}")
        if self.features not in ("auto", "feast", "table"):
            raise ConfigError(f"unknown feature source {self.features!r}", field="features",
                              fix="use auto, feast or table")
        ports = [self.http_port, self.grpc_port]
        if self.backend != "kserve":
            ports += [self.triton_http_port, self.triton_grpc_port, self.triton_metrics_port]
        if len(set(ports)) != len(ports) or not all(0 < p < 65536 for p in ports):
            raise ConfigError(f"ports {ports} overlap or are out of range", field="ports",
                              fix="give every server its own port in 1..65535")
        if not self.cache_ttl_s >= 0:
            raise ConfigError(f"cache_ttl_s={self.cache_ttl_s}", field="cache_ttl_s",
                              fix="use a time >= 0 seconds")
        if not Path(self.workdir).is_dir():
            raise ConfigError(f"{self.workdir} is not a directory", field="workdir",
                              fix="run the pipeline first (`serendip demo --workdir W`)")


def resolve_backend(cfg: ServeConfig) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    from serendip.platform.serving.triton import triton_available

    return "triton" if triton_available(cfg.triton_venv) else "kserve"


def ensure_repository(workdir: Path) -> Path:
    """``<workdir>/model_repository``, exported from the work directory's own models when it
    is missing (``serendip export`` does the same, or from the registry)."""
    repo = workdir / "model_repository"
    if set(MODELS) <= set(exported_versions(repo)):
        export_recommend_snapshot(workdir, repo)    # the BLS variant reads current scores
        return repo
    mllm = latest_mllm_dir(workdir)
    if mllm is None or not (workdir / "retriever" / "config.json").exists():
        raise SerendipError(f"nothing to serve in {workdir}: no exported model repository and "
                            "no mllm/<run> + retriever/ to export", field="workdir",
                            fix="run `serendip export --workdir W` (or the pipeline) first")
    print(f"serendip serve: exporting {mllm.relative_to(workdir)} and retriever/ into "
          f"{repo}", flush=True)
    export_repository([ExportSource("mllm", mllm), ExportSource("retriever",
                                                                 workdir / "retriever")], repo,
                      snapshot_from=workdir)
    return repo


def weights_dir(repo: Path, model: str) -> Path:
    """``<repo>/<model>/<highest version>/weights`` — what Triton would load."""
    versions = sorted(int(p.name) for p in (repo / model).iterdir() if p.name.isdigit())
    if not versions:
        raise SerendipError(f"{repo / model} has no version folder", field="model_repository",
                            fix="run `serendip export`")
    return repo / model / str(versions[-1]) / "weights"


def serve(cfg: ServeConfig) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code.

    Raises:
        ConfigError: bad settings, or a port already in use (checked before anything starts).
        SerendipError: nothing to serve; Triton failed (backend triton) or another process
            answers on a Triton port.
    """
    cfg.check()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    wd = Path(cfg.workdir).resolve()
    backend = resolve_backend(cfg)
    check_ports_free(cfg.host, [("--http-port", cfg.http_port), ("--grpc-port", cfg.grpc_port)]
                     + ([("--triton-http-port", cfg.triton_http_port),
                         ("--triton-grpc-port", cfg.triton_grpc_port),
                         ("--triton-metrics-port", cfg.triton_metrics_port)]
                        if backend == "triton" else []))
    repo = ensure_repository(wd)

    from serendip.platform.serving.kserve_server import (
        HandlerModel,
        LoopbackModelServer,
        RecommendTransformer,
    )
    from serendip.platform.serving.lookup import ClusterLookup, ItemCatalog
    from serendip.serving.cluster_choice import ClusterCache
    from serendip.serving.handlers import MllmHandler, RetrieverHandler

    # Triton's BLS recommend reads the same cluster source as the transformer (model.py)
    os.environ["SERENDIP_SERVE_FEATURES"] = cfg.features if cfg.features != "auto" else (
        "feast" if (wd / "feature_repo" / "feature_store.yaml").exists() else "table")
    triton = None
    if backend == "triton":   # launched first: its models load while we open Feast
        from serendip.platform.serving.triton import TritonServer

        triton = TritonServer(repo, wd / ".serve" / "triton", host=cfg.host,
                              http_port=cfg.triton_http_port, grpc_port=cfg.triton_grpc_port,
                              metrics_port=cfg.triton_metrics_port, venv=cfg.triton_venv)
        print(f"serendip serve: starting tritonserver (log {triton.log_path})", flush=True)
        triton.launch()
    try:
        lookup = ClusterLookup(wd, cfg.features)
        catalog = ItemCatalog(wd, describe=lookup.own_description)
        if triton is not None:
            triton.wait_ready(180.0)
    except SerendipError as e:
        if triton is None or cfg.backend == "triton" or e.field != "triton":
            if triton is not None:
                triton.stop()
            raise
        # auto: a Triton that does not come up is not fatal — serve with the fallback
        triton.stop()
        print(f"serendip serve: Triton failed ({e.message.splitlines()[0]}); see "
              f"{triton.log_path}. Falling back to the KServe backend.", file=sys.stderr,
              flush=True)
        triton, backend = None, "kserve"
    except BaseException:
        if triton is not None:
            triton.stop()
        raise
    cache = ClusterCache(ttl_s=cfg.cache_ttl_s)
    fallback: list[HandlerModel] = []
    if triton is not None:
        models = [RecommendTransformer.for_triton(lookup, catalog, triton.grpc_url,
                                                  cache=cache)]
    else:
        import torch

        torch.set_num_threads(int(os.environ.get("SERENDIP_TORCH_THREADS", "1")))
        mllm = HandlerModel(MllmHandler.load(weights_dir(repo, "mllm")), max_delay_s=0.005)
        retr = HandlerModel(RetrieverHandler.load(weights_dir(repo, "retriever")),
                            max_delay_s=0.0005)
        fallback = [mllm, retr]
        models = [*fallback, RecommendTransformer.for_handlers(lookup, catalog, mllm, retr,
                                                               cache=cache)]
    versions = exported_versions(repo)
    print(f"serendip serve: backend {backend}; features from {lookup.kind}; "
          f"{len(catalog)} catalogue items", flush=True)
    print(f"  recommend  http://{cfg.host}:{cfg.http_port}/v2/models/recommend/infer  "
          f"grpc {cfg.host}:{cfg.grpc_port}  metrics http://{cfg.host}:{cfg.http_port}/metrics",
          flush=True)
    if triton is not None:
        names = ",".join(versions)
        print(f"  triton     http://{triton.http_url}/v2/models/{{{names}}}/infer  "
              f"grpc {triton.grpc_url}  metrics http://{cfg.host}:{cfg.triton_metrics_port}"
              "/metrics", flush=True)
    else:
        print("  mllm, retriever (KServe fallback) on the same ports", flush=True)
    for m, v in versions.items():
        print(f"  {m:10s} version {v['version']} from {v['origin']}", flush=True)
    server = LoopbackModelServer(host=cfg.host, http_port=cfg.http_port,
                                 grpc_port=cfg.grpc_port)
    try:
        server.start(models)
    finally:
        for m in fallback:
            m.stop()
        if triton is not None:
            code = triton.stop()
            print(f"serendip serve: tritonserver stopped (exit {code})", file=sys.stderr,
                  flush=True)
    print("serendip serve: stopped", file=sys.stderr, flush=True)
    return 0
