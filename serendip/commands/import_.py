"""``serendip import recbole``: public data sets in RecBole's atomic format → our tables.

Reads ``<src>/<name>.inter`` and ``<src>/<name>.item``; writes ``items.parquet``,
``interactions.parquet`` and (when the ``.item`` file has a category field)
``item_labels.parquet`` to ``--out``. Rules (time order, tie-break, satisfaction) are in
:mod:`serendip.data.recbole`.
"""

from __future__ import annotations

import argparse
import json

FORMATS = ("recbole",)


def _scale(text: str) -> tuple[float, float]:
    lo, sep, hi = text.partition("-")
    try:
        if not sep:
            raise ValueError
        return float(lo), float(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"rating scale must look like 1-5, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("format", choices=FORMATS, help="input format (recbole: atomic files)")
    p.add_argument("--src", required=True, help="folder with <name>.inter and <name>.item")
    p.add_argument("--out", required=True, help="output directory for the tables")
    p.add_argument("--title-field", default=None,
                   help="the .item field that becomes the title (default: first of "
                        "title, movie_title, name, item_name, product_name, book_title)")
    p.add_argument("--label-field", default=None,
                   help="the .item category field kept as item labels (default: first of "
                        "class, genre, genres, categories, category; '' for none)")
    p.add_argument("--user-field", default="user_id")
    p.add_argument("--item-field", default="item_id")
    p.add_argument("--time-field", default="timestamp", help="Unix seconds")
    p.add_argument("--rating-field", default=None,
                   help="default: 'rating' when present, else implicit feedback "
                        "(satisfaction 1.0); '' ignores ratings")
    p.add_argument("--rating-scale", type=_scale, default=None, metavar="LO-HI",
                   help="satisfaction = (rating - LO) / (HI - LO); default: the file's "
                        "min and max rating")


def run(args: argparse.Namespace) -> int:
    from serendip.data.recbole import RecBoleImportConfig, import_recbole

    cfg = RecBoleImportConfig(user_field=args.user_field, item_field=args.item_field,
                              time_field=args.time_field, rating_field=args.rating_field,
                              title_field=args.title_field, label_field=args.label_field,
                              rating_scale=args.rating_scale)
    print(json.dumps(import_recbole(args.src, args.out, cfg), indent=2))
    return 0
