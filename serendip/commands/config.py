"""``serendip config``: list every setting of a stage with its type, default and help.

``serendip config --list`` prints every section; ``serendip config --list finetune`` one
(nested configs appear with dotted names, as ``--set`` takes them: ``prompt.strategy``).
The same listing, as tables, is ``docs/settings.md``.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from serendip.config import SECTIONS

    p.add_argument("--list", nargs="?", const="", default=None, metavar="SECTION",
                   dest="section",
                   help=f"print the settings of SECTION (one of: {', '.join(SECTIONS)}) "
                        "or, without SECTION, of every section")


def run(args: argparse.Namespace) -> int:
    from serendip.config import SECTIONS, format_settings, section_class

    if args.section is None:
        print("sections: " + ", ".join(SECTIONS) + "\n(`serendip config --list SECTION`)")
        return 0
    names = [args.section] if args.section else list(SECTIONS)
    classes = [section_class(name) for name in names]     # an unknown name fails first
    print("\n\n".join(format_settings(n, c) for n, c in zip(names, classes)))
    return 0
