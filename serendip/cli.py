"""``serendip <verb>``: one verb per stage (README 'CLI').

Each verb lives in ``serendip/commands/<verb>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; heavy imports happen inside ``run`` so ``--help`` stays instant. A verb
whose module does not exist yet says so and exits 2. Project errors become one line on stderr
and exit code 2 (the caller's input) or 3 (a service it depends on failed: ServiceError) —
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import keyword
import os
import sys

VERBS: dict[str, str] = {
    "synth": "generate the synthetic short-video platform (items, interactions, ground truth)",
    "import": "import a public data set (RecBole atomic files) into our tables",
    "validate": "check the tables in a directory against their data contracts",
    "cluster": "build the 4-level traffic-balanced cluster tree with descriptions",
    "curate": "select serendipitous pairs and build training examples",
    "base": "build the pretrained base VLM offline (EfficientNet-Lite0 + SmolLM2-135M)",
    "finetune": "LoRA-fine-tune the multimodal LLM for controlled generation",
    "evaluate": "offline metrics, ablations and the online-simulation comparison",
    "promote": "move the @champion alias when the challenger is not worse",
    "train-retriever": "train the transformer sequence retriever",
    "export": "write the Triton model repository from the @champion models",
    "score": "batch-score popular items and write item_serendipity",
    "serve": "start the model server (Triton, or the KServe fallback)",
    "recommend": "ask the server for serendipitous recommendations",
    "pipeline": "compile or run the KFP pipelines",
    "demo": "run every stage on the embedded default and write a report",
    "config": "list every setting (type, default, unit and range): --list [SECTION]",
}


def _module_name(verb: str) -> str:
    name = verb.replace("-", "_")
    if keyword.iskeyword(name):     # `import` lives in serendip/commands/import_.py
        name += "_"
    return "serendip.commands." + name


def _load(verb: str):
    try:
        return importlib.import_module(_module_name(verb))
    except ModuleNotFoundError as e:
        if e.name == _module_name(verb):
            return None
        raise


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error form: ONE line naming the argument and a fix, exit 2
    (argparse's default prints the whole usage block first)."""

    def error(self, message: str):
        fix = "" if "(fix:" in message else f" (fix: see `{self.prog} --help`)"
        self.exit(2, f"{self.prog}: error: {message}{fix}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="serendip", description="Serendipitous recommendation with a multimodal LLM.")
    parser.add_argument("--version", action="version",
                        version=f"serendip {__import__('serendip').__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    for verb, help_text in VERBS.items():
        mod = _load(verb)
        p = sub.add_parser(verb, help=help_text + ("" if mod else " [not implemented yet]"),
                           description=help_text)
        if mod is not None:
            mod.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help()
        return 2
    mod = _load(args.verb)
    if mod is None:
        print(f"serendip {args.verb}: not implemented yet", file=sys.stderr)
        return 2
    from serendip.errors import SerendipError, ServiceError

    try:
        return int(mod.run(args) or 0)
    except ServiceError as e:              # a dependency failed, not the caller's input
        print(f"serendip {args.verb}: error: {e}", file=sys.stderr)
        return 3
    except SerendipError as e:
        print(f"serendip {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"serendip {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
