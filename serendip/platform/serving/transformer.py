"""``python -m serendip.platform.serving.transformer``: the ``recommend`` transformer as KServe
runs it in a cluster (``spec.transformer`` of the ``serendip-recommend`` InferenceService).

KServe appends ``--model_name``, ``--predictor_host`` (and ``--http_port``) to the container's
arguments; we add where Feast's repo and the items table live. The model answers under the
InferenceService's name and under ``recommend``. Binds 0.0.0.0 here: a pod must be reachable.
Locally, ``serendip serve`` runs the same class on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="serendip-recommend-transformer")
    p.add_argument("--model_name", default="recommend")
    p.add_argument("--predictor_host", required=True,
                   help="Triton predictor host[:port] (gRPC); port 80 when omitted")
    p.add_argument("--predictor_protocol", default="grpc-v2", choices=("grpc-v2",),
                   help="only gRPC: the transformer calls Triton with kserve's gRPC client")
    p.add_argument("--http_port", type=int, default=8080)
    p.add_argument("--grpc_port", type=int, default=8081)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--feature-repo", default="/feature_repo",
                   help="Feast repo with feature_store.yaml (online store + registry)")
    p.add_argument("--items", default=None,
                   help="items parquet (path or URI) for items Feast has not scored yet")
    p.add_argument("--clusters", default=None,
                   help="clusters parquet (path or URI) of the served tree: with Feast's "
                        "item_clusters view, the MLLM fallback answers only with the item's "
                        "serendipitous candidates (paper §2)")
    p.add_argument("--level", type=int, default=3, help="candidates' level l (default 3)")
    p.add_argument("--delta", type=int, default=1, help="candidates' delta (default 1)")
    p.add_argument("--workdir", default=None, help="a local work directory instead")
    p.add_argument("--features", choices=("auto", "feast", "table"), default="auto",
                   help="feast (the feature repo), or table (item_serendipity of --workdir)")
    p.add_argument("--cache-ttl", type=float, default=300.0)
    args, _unknown = p.parse_known_args(argv)   # KServe may pass more flags than we use
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from serendip.errors import SerendipError
    from serendip.platform.serving.ports import check_ports_free

    try:                              # before Feast and the catalogue load: one line, exit 2
        check_ports_free(args.host, [("--http_port", args.http_port),
                                     ("--grpc_port", args.grpc_port)])
    except SerendipError as e:
        print(f"recommend transformer: {e}", file=sys.stderr, flush=True)
        return 2
    from serendip.platform.serving.kserve_server import LoopbackModelServer, RecommendTransformer
    from serendip.platform.serving.lookup import ClusterLookup, ItemCatalog
    from serendip.serving.cluster_choice import ClusterCache

    lookup = ClusterLookup(args.workdir, args.features, feature_repo=args.feature_repo
                           if not args.workdir else None)
    catalog = ItemCatalog(args.workdir, items=args.items, describe=lookup.own_description,
                          clusters=args.clusters, own_cluster=lookup.own_cluster,
                          level=None if args.workdir else args.level,
                          delta=None if args.workdir else args.delta)
    host = args.predictor_host if ":" in args.predictor_host else f"{args.predictor_host}:80"
    model = RecommendTransformer.for_triton(lookup, catalog, host,
                                            cache=ClusterCache(ttl_s=args.cache_ttl),
                                            name=args.model_name)
    server = LoopbackModelServer(host=args.host, http_port=args.http_port,
                                 grpc_port=args.grpc_port)
    if args.model_name != "recommend":
        server.register_model(model, name="recommend")
    print(f"recommend transformer: model {args.model_name} (alias recommend), features from "
          f"{lookup.kind}, predictor {host}", file=sys.stderr, flush=True)
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
