"""``serendip validate``: check every known table found in a directory."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="directory holding <table>.parquet or <table>.csv files")


def run(args: argparse.Namespace) -> int:
    from serendip.data.io import has_table, read_table
    from serendip.data.schemas import TABLES

    found = {}
    order = ["items", "clusters"] + [t for t in TABLES if t not in ("items", "clusters")]
    for name in order:
        if has_table(args.data, name):
            found[name] = read_table(args.data, name, refs=found)
            print(f"{name}: {found[name].num_rows} rows OK")
    if not found:
        from serendip.errors import SerendipError
        raise SerendipError(f"no tables found in {args.data}", field="--data",
                            fix="point --data at a directory with items.parquet or items.csv etc.")
    return 0
