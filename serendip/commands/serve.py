"""``serendip serve``: Triton (mllm, retriever) + the KServe ``recommend`` transformer, or the
KServe fallback serving all three — on 127.0.0.1, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", required=True, help="work directory with an exported "
                   "model_repository/ (exported from mllm/ and retriever/ if missing)")
    p.add_argument("--backend", choices=("auto", "triton", "kserve"), default="auto",
                   help="triton: real tritonserver from .venv-triton (`make triton-venv`); "
                        "kserve: KServe ModelServer fallback; auto: triton when its venv "
                        "exists (default)")
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address of every server (default loopback)")
    p.add_argument("--http-port", type=int, default=8080, help="recommend v2 REST port")
    p.add_argument("--grpc-port", type=int, default=8081, help="recommend v2 gRPC port")
    p.add_argument("--triton-http-port", type=int, default=8000)
    p.add_argument("--triton-grpc-port", type=int, default=8001)
    p.add_argument("--triton-metrics-port", type=int, default=8002)
    p.add_argument("--features", choices=("auto", "feast", "table"), default="auto",
                   help="cluster lookup: Feast online store (auto when <workdir>/feature_repo "
                        "exists) or the item_serendipity table")
    p.add_argument("--cache-ttl", type=float, default=300.0,
                   help="seconds an item's cluster stays in the in-process cache")
    p.add_argument("--triton-venv", default=None,
                   help="Triton venv (default .venv-triton or $SERENDIP_TRITON_VENV)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from serendip.platform.serving.server import ServeConfig, serve

    return serve(ServeConfig(
        workdir=Path(args.workdir), backend=args.backend, host=args.host,
        http_port=args.http_port, grpc_port=args.grpc_port,
        triton_http_port=args.triton_http_port, triton_grpc_port=args.triton_grpc_port,
        triton_metrics_port=args.triton_metrics_port, features=args.features,
        cache_ttl_s=args.cache_ttl, triton_venv=args.triton_venv))
