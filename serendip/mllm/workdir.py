"""The fine-tuning stage's view of a work directory: curated examples, clusters, curation.json,
and rebuilding examples for another prompt config from the same curated selection."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from serendip.data.io import find_table, read_table
from serendip.errors import SerendipError
from serendip.prompts import PromptConfig, read_prompt_manifest

SELECTION = ["context_item_id", "target_cluster_id", "satisfaction", "split"]


def latest_model_dir(workdir: str | os.PathLike) -> Path | None:
    """The fine-tuned model a local run left in ``<workdir>/mllm``: the directory whose
    ``serendip.json`` (written last, atomically, when a model is saved) is newest — the one
    rule for "the latest model" used by evaluate, export, serve and the online simulation.
    Working folders (``.<run>.work``) and directories without ``serendip.json`` are never
    models. None when there is none."""
    runs = [p.parent for p in Path(workdir, "mllm").glob("*/serendip.json")
            if not p.parent.name.startswith(".")]
    return max(runs, key=lambda p: ((p / "serendip.json").stat().st_mtime_ns, p.name)) \
        if runs else None


@dataclass
class StageInputs:
    workdir: Path
    items: pa.Table
    clusters: pa.Table
    item_clusters: pa.Table
    examples: pa.Table
    curation: dict
    prompt: PromptConfig
    level: int
    delta: int


def load_inputs(workdir: str | os.PathLike, tree_dir: str | os.PathLike | None = None,
                examples_dir: str | os.PathLike | None = None) -> StageInputs:
    """Tables of a work directory; ``tree_dir`` (clusters, item_clusters) and ``examples_dir``
    (examples, curation.json) default to it — KFP passes them as separate artifacts. The prompt
    config is curation.json's ``prompt`` manifest, as curation wrote it.

    Raises:
        SchemaError: a missing or malformed table. SerendipError: no curation.json.
        ConfigError: a curation.json without the prompt manifest (re-run curate)."""
    wd = Path(workdir)
    tree = Path(tree_dir or wd)
    exd = Path(examples_dir or wd)
    where = {"items": wd, "clusters": tree, "item_clusters": tree, "examples": exd}
    for name, d in where.items():
        find_table(d, name)   # parquet or CSV; a missing one fails before any work is spent
    cur_path = exd / "curation.json"
    if not cur_path.exists():
        raise SerendipError(f"{cur_path} is missing", field="curation.json",
                            fix=f"run `serendip curate --data {exd}` first")
    curation = json.loads(cur_path.read_text())
    prompt = read_prompt_manifest(curation, str(cur_path),
                                  fix=f"re-run `serendip curate --data {exd}`")
    items = read_table(wd, "items")
    clusters = read_table(tree, "clusters")
    item_clusters = read_table(tree, "item_clusters", refs={"items": items, "clusters": clusters})
    examples = read_table(exd, "examples", refs={"items": items, "clusters": clusters})
    return StageInputs(wd, items, clusters, item_clusters, examples, curation, prompt,
                       int(curation.get("level", 3)), int(curation.get("delta", 1)))


def rebuild_examples(inp: StageInputs, prompt: PromptConfig) -> pa.Table:
    """Examples for ``prompt`` from the same curated selection (same pairs, same split)."""
    if prompt == inp.prompt:
        return inp.examples
    try:
        from serendip.curation import build_examples
    except ImportError:  # pragma: no cover - the curation stage ships with the package
        raise SerendipError("serendip.curation is not available", field="prompt",
                            fix="use the prompt config the examples were curated with") from None
    selected = inp.examples.select(SELECTION)
    return build_examples(selected, inp.items, inp.clusters, inp.item_clusters, prompt,
                          inp.level)
