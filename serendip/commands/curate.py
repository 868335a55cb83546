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
    p.add_argument("--level", type=int, default=None, help="l: levels at which pairs differ (3)")
    p.add_argument("--delta", type=int, default=None, help="δ: shared ancestor at l-δ (1)")
    p.add_argument("--top-k", type=int, default=None, help="context items per cluster (10)")
    p.add_argument("--strategy", default=None, help="text | video | multimodal | cot (cot)")
    p.add_argument("--frames", type=int, default=None, help="uniformly sampled frames (4)")
    p.add_argument("--thumbnail", action="store_true", help="use the thumbnail, not frames")
    p.add_argument("--config", default=None, help="YAML with CurationConfig fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. test_fraction=0.1 or prompt.n_frames=8")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from serendip.commands.cluster import split_settings
    from serendip.config import from_dict
    from serendip.curation import CurationConfig, curate, curation_json
    from serendip.data.io import atomic_write_bytes, atomic_write_parquet, read_table, write_table

    data, _ = split_settings(args.config, [o for o in args.overrides
                                           if not o.startswith("prompt.")])
    prompt = dict(data.pop("prompt", None) or {})
    for o in args.overrides:
        if o.startswith("prompt."):
            from serendip.config import parse_overrides

            prompt.update({k.split(".", 1)[1]: v for k, v in parse_overrides([o]).items()})
    for key, value in (("level", args.level), ("delta", args.delta), ("top_k", args.top_k)):
        if value is not None:
            data[key] = value
    if args.strategy is not None:
        prompt["strategy"] = args.strategy
    if args.frames is not None:
        prompt["n_frames"] = args.frames
    if args.thumbnail:
        prompt["use_thumbnail"] = True
    data["prompt"] = prompt
    cfg = from_dict(CurationConfig, data)
    cfg.check()
    out = Path(args.out or args.data)
    out.mkdir(parents=True, exist_ok=True)
    items = read_table(args.data, "items")
    interactions = read_table(args.data, "interactions", refs={"items": items})
    clusters = read_table(args.data, "clusters")
    item_clusters = read_table(args.data, "item_clusters", refs={"items": items})
    result = curate(items, interactions, clusters, item_clusters, cfg)
    write_table(out, "examples", result.examples, refs={"items": items, "clusters": clusters})
    atomic_write_parquet(result.selected, out / "curated_pairs.parquet")
    doc = curation_json(result, cfg)
    atomic_write_bytes(out / "curation.json", json.dumps(doc, indent=2).encode())
    print(json.dumps({"out": str(out), **result.stats}, indent=2))
    return 0
