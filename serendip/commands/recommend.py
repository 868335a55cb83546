"""``serendip recommend``: ask a running server (``serendip serve``, or a KServe
InferenceService) for serendipitous recommendations over the v2 protocol (tritonclient)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--item", required=True, help="context item id (the video being watched)")
    p.add_argument("--history", nargs="*", default=[],
                   help="the user's recent item ids, oldest first (may be empty)")
    p.add_argument("--k", type=int, default=10, help="number of items (default 10)")
    p.add_argument("--share", type=float, default=None,
                   help="serendipitous share of the blended slate, in [0, 1] (default: the "
                        "server's, 0.2 unless SERENDIP_SERENDIPITOUS_SHARE says otherwise; 1: "
                        "only the serendipitous cluster's items)")
    p.add_argument("--url", default=None,
                   help="host:port of the recommend endpoint (default 127.0.0.1:8080 for http, "
                        "127.0.0.1:8081 for grpc)")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http")
    p.add_argument("--model", default="recommend", help="v2 model name (default recommend)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from serendip.errors import SerendipError
    from serendip.platform.serving.client import InferError, V2Client

    if args.k < 1:
        raise SerendipError(f"k={args.k}", field="k", fix="ask for at least 1 item")
    if args.share is not None and not 0.0 <= args.share <= 1.0:   # NaN fails this too
        raise SerendipError(f"share={args.share}", field="--share",
                            fix="pass a share in [0, 1], e.g. 0.2 for 2 of 10 items")
    client = V2Client(args.url, args.protocol, args.timeout)
    if not client.ready():
        raise SerendipError(f"no ready v2 server at {client.url} ({args.protocol})",
                            field="url", fix="start one with `serendip serve --workdir W`")
    try:
        res = client.recommend(args.item, args.history, args.k, args.share)
    except InferError as e:
        if not e.is_bad_input:         # the server's own fault: not the user's input (exit 1)
            print(f"serendip recommend: the server failed ({e.status}): {e.message} (fix: see "
                  "the server's log; the request itself was valid)", file=sys.stderr)
            return 1
        raise SerendipError(f"the server refused the request ({e.status}): {e.message}") \
            from None
    finally:
        client.close()
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
        return 0
    n_ser = sum(s == "serendipitous" for s in res.item_sources)
    print(f"context item {args.item}: serendipitous cluster {res.cluster_id} "
          f"({res.description}) [{res.source}]; {n_ser} of {len(res.item_ids)} items "
          "serendipitous, the rest exploit (the unrestricted retriever)")
    for rank, (item, score, src) in enumerate(zip(res.item_ids, res.scores,
                                                  res.item_sources), 1):
        print(f"{rank:3d}. {item}  {score:.4f}  {src}")
    if not res.item_ids:
        print("  (no unseen items)")
    return 0
