"""The fine-tuning stage's view of a work directory: curated examples, clusters, curation.json,
and rebuilding examples for another prompt config from the same curated selection."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from serendip.curation import CurationManifest, build_examples, read_curation
from serendip.data.io import find_table, read_table
from serendip.prompts import PromptConfig
from serendip.transitions import TransitionPrior, read_prior

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
    curation: CurationManifest      # curation.json (serendip.curation.read_curation)
    prior: TransitionPrior | None = None   # transition_prior.json (None: curated before it)

    @property
    def prompt(self) -> PromptConfig:
        """The prompt the examples were curated with (curation.json's manifest)."""
        return self.curation.prompt

    @property
    def level(self) -> int:
        return self.curation.level

    @property
    def delta(self) -> int:
        return self.curation.delta


def load_inputs(workdir: str | os.PathLike, tree_dir: str | os.PathLike | None = None,
                examples_dir: str | os.PathLike | None = None) -> StageInputs:
    """Tables of a work directory; ``tree_dir`` (clusters, item_clusters) and ``examples_dir``
    (examples, curation.json) default to it — KFP passes them as separate artifacts. l, δ and
    the prompt config are curation.json's (:func:`serendip.curation.read_curation`), as
    curation wrote them.

    Raises:
        SchemaError: a missing or malformed table. SerendipError: no curation.json.
        ConfigError: a curation.json without the prompt manifest or another setting (re-run
            curate)."""
    wd = Path(workdir)
    tree = Path(tree_dir or wd)
    exd = Path(examples_dir or wd)
    where = {"items": wd, "clusters": tree, "item_clusters": tree, "examples": exd}
    for name, d in where.items():
        find_table(d, name)   # parquet or CSV; a missing one fails before any work is spent
    curation = read_curation(exd)
    items = read_table(wd, "items")
    clusters = read_table(tree, "clusters")
    item_clusters = read_table(tree, "item_clusters", refs={"items": items, "clusters": clusters})
    examples = read_table(exd, "examples", refs={"items": items, "clusters": clusters})
    return StageInputs(wd, items, clusters, item_clusters, examples, curation,
                       read_prior(exd))



def rebuild_examples(inp: StageInputs, prompt: PromptConfig) -> pa.Table:
    """Examples for ``prompt`` from the same curated selection (same pairs, same split)."""
    if prompt == inp.prompt:
        return inp.examples
    selected = inp.examples.select(SELECTION)
    return build_examples(selected, inp.items, inp.clusters, inp.item_clusters, prompt,
                          inp.level)
