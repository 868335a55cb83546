"""``serendip cluster``: item embeddings → 4-level traffic-balanced cluster tree.

Reads items.parquet from ``--data``; writes embeddings.parquet, cluster_tree/,
clusters.parquet and item_clusters.parquet to ``--out`` (may be the same directory).
Settings: ``--config tree.yaml`` and ``--set key=value`` for ClusterConfig fields, or
``--set embedding.<field>=value`` for EmbeddingConfig fields.
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="directory with items.parquet")
    p.add_argument("--out", default=None, help="output directory (default: --data)")
    p.add_argument("--branching", default=None,
                   help="children per level, e.g. 8/8/8/8 (default) or 4/3/4/2")
    p.add_argument("--config", default=None,
                   help="YAML with ClusterConfig fields and an optional 'embedding:' mapping")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. traffic_power=0 or embedding.w_text=0.5")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute embeddings even if embeddings.parquet matches")


def split_settings(path: str | None, overrides: list[str]) -> tuple[dict, dict]:
    """(cluster settings, embedding settings) from a YAML file and key=value overrides."""
    from pathlib import Path

    import yaml

    from serendip.config import parse_overrides
    from serendip.errors import ConfigError

    data: dict = {}
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist", field="--config",
                              fix="pass an existing YAML file")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} is not a mapping", field="--config",
                              fix="write the config as key: value pairs")
    emb = dict(data.pop("embedding", None) or {})
    for key, value in parse_overrides(overrides).items():
        if key.startswith("embedding."):
            emb[key.split(".", 1)[1]] = value
        else:
            data[key] = value
    return data, emb


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from serendip.config import from_dict
    from serendip.data.io import read_table, write_table
    from serendip.embeddings import EmbeddingConfig, item_embeddings
    from serendip.tree import ClusterConfig, build_cluster_tree, parse_branching

    out = Path(args.out or args.data)
    out.mkdir(parents=True, exist_ok=True)
    tree_kw, emb_kw = split_settings(args.config, args.overrides)
    if args.branching:
        tree_kw["branching"] = parse_branching(args.branching)
    elif "branching" in tree_kw:
        tree_kw["branching"] = parse_branching(tree_kw["branching"])
    cfg = from_dict(ClusterConfig, tree_kw)
    ecfg = from_dict(EmbeddingConfig, emb_kw)
    cfg.check()
    ecfg.check()
    items = read_table(args.data, "items")
    print(f"embedding {items.num_rows} items ...", flush=True)
    emb = item_embeddings(items, ecfg, base_dir=args.data,
                          cache_dir=None if args.no_cache else out)
    if args.no_cache:
        from serendip.embeddings import EMBEDDINGS_FILE, _cache_key, save_embeddings

        save_embeddings(out / EMBEDDINGS_FILE, items.column("item_id"), emb,
                        _cache_key(items, ecfg))
    print(f"building the tree {'/'.join(map(str, cfg.branching))} ...", flush=True)
    tree = build_cluster_tree(items, emb, cfg)
    tree.stats["embedding"] = {"config": json.loads(json.dumps(ecfg.__dict__)),
                               "dim": int(emb.shape[1])}
    tree.save(out / "cluster_tree")
    write_table(out, "clusters", tree.clusters)
    write_table(out, "item_clusters", tree.item_clusters, refs={"items": items})
    summary = {"items": items.num_rows, "clusters": tree.clusters.num_rows,
               "branching": list(cfg.branching), "balance": {k: v for k, v in tree.stats.items()
                                                             if k.startswith("level")},
               "out": str(out)}
    print(json.dumps(summary, indent=2))
    return 0
