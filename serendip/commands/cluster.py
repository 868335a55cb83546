"""``serendip cluster``: item embeddings → 4-level traffic-balanced cluster tree.

Reads items (parquet or CSV) from ``--data``; writes embeddings.parquet, cluster_tree/,
clusters.parquet and item_clusters.parquet to ``--out`` (may be the same directory).
Settings: ``--config tree.yaml`` and ``--set key=value`` for ClusterConfig fields, with
``--set embedding.<field>=value`` (YAML: an ``embedding:`` mapping) for its embedding
(``serendip config --list cluster`` lists them all).
Prints each embedding block's weight and, when item labels exist (``item_labels.parquet`` from
``serendip import``, or a ``labels`` column), NMI/ARI per level against the primary label.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="directory with items.parquet or items.csv")
    p.add_argument("--out", default=None, help="output directory (default: --data)")
    p.add_argument("--branching", default=None,
                   help="children per level, e.g. 4/3/4/2, or auto (default: from the "
                        "catalogue size, ~25 items per leaf; the choice is printed)")
    p.add_argument("--config", default=None,
                   help="YAML with ClusterConfig fields and an optional 'embedding:' mapping "
                        "(`serendip config --list cluster` lists them all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. traffic_power=0 or embedding.w_text=0.5")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="faiss threads while building (default 1: the nodes are small)")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute embeddings even if embeddings.parquet matches")


def run(args: argparse.Namespace) -> int:
    from serendip.config import load_config
    from serendip.tree import ClusterConfig, cluster_stage

    cfg = load_config(ClusterConfig, args.config, args.overrides,
                      settings={"branching": args.branching} if args.branching else None)
    shape = cfg.branching if cfg.branching == "auto" else "/".join(map(str, cfg.branching))
    print(f"clustering {args.data} into {shape} ...", flush=True)
    from serendip.locks import workdir_lock

    with workdir_lock(args.out or args.data, "cluster", "cluster"):
        tree = cluster_stage(args.data, args.out, cfg, use_cache=not args.no_cache,
                             threads=args.threads)
    chosen = tree.stats.get("branching", {})
    if chosen.get("mode") == "auto":
        print(f"branching (auto): {'/'.join(map(str, tree.config.branching))} - {chosen['why']}",
              flush=True)
    summary = {"items": int(sum(tree.sizes[c] for c in tree.ids[0])),
               "clusters": sum(len(ids) for ids in tree.ids),
               "branching": list(tree.config.branching),
               "balance": {k: v for k, v in tree.stats.items() if k.startswith("level")},
               # each block's weight, dim and share of the squared distance (0: no data)
               "embedding_blocks": tree.stats.get("embedding", {}).get("blocks", {}),
               "out": str(args.out or args.data)}
    if "labels" in tree.stats:      # item labels present: NMI/ARI per level vs primary label
        summary["labels"] = tree.stats["labels"]
    print(json.dumps(summary, indent=2))
    return 0
