"""``serendip curate``: serendipitous pairs → diversified selection → training examples.

Reads items, interactions, clusters and item_clusters from ``--data``; writes examples.parquet,
curated_pairs.parquet and curation.json to ``--out`` (may be the same directory).
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="directory with items, interactions, clusters, item_clusters")
    p.add_argument("--out", default=None, help="output directory (default: --data)")
    p.add_argument("--clusters", default=None,
                   help="directory with clusters/item_clusters (default: --data if there, else --out)")
    p.add_argument("--level", type=int, default=None, help="l: level at which pairs differ (3)")
    p.add_argument("--delta", type=int, default=None, help="δ: shared ancestor at l-δ (1)")
    p.add_argument("--top-k", type=int, default=None, help="context items per cluster (10)")
    p.add_argument("--strategy", default=None, help="text | video | multimodal | cot (cot)")
    p.add_argument("--frames", type=int, default=None, help="uniformly sampled frames (4)")
    p.add_argument("--thumbnail", action="store_true", help="use the thumbnail, not frames")
    p.add_argument("--config", default=None,
                   help="YAML with CurationConfig fields (`serendip config --list curate`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. test_fraction=0.1 or prompt.n_frames=8")


def run(args: argparse.Namespace) -> int:
    from serendip.config import load_config
    from serendip.curation import CurationConfig, curate_stage

    flags = {key: value for key, value in (
        ("level", args.level), ("delta", args.delta), ("top_k", args.top_k),
        ("prompt.strategy", args.strategy), ("prompt.n_frames", args.frames),
        ("prompt.use_thumbnail", args.thumbnail or None)) if value is not None}
    cfg = load_config(CurationConfig, args.config, args.overrides, settings=flags)
    from serendip.locks import workdir_lock

    with workdir_lock(args.out or args.data, "curate", "curate"):
        result = curate_stage(args.data, args.out, cfg, clusters_dir=args.clusters)
    print(json.dumps({"out": str(args.out or args.data), **result.stats}, indent=2))
    return 0
