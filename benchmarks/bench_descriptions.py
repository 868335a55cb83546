"""Cluster descriptions on real titles (issue 14 item 5): MovieLens-100k, branching 4/3/4/2.

Imports ``../shared/data/ml-100k`` with ``serendip import``'s library code, builds the tree
from the default embedding (all blocks with data) and reports, with and without the genres as
item labels (:func:`serendip.descriptions.grounding_report`):

* ``ends_in_number`` — descriptions whose last word is a number (target 0; 28 of 160 before);
* ``grounded_share`` — every word in >= 10% of the members' titles or labels;
* ``grounded_or_in_labels_share`` — every word in >= 10% of the member titles, or in some
  member's labels (the issue's reading; target 100%);
* ``in_members_share`` — every word occurs in the cluster's own members (target 100%);
* 20 sample descriptions (the 4 level-1 ones, 16 others drawn with a fixed seed);
* the time to describe the tree.

Skipped (``{"skipped": ...}``) when the data set is absent.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
BRANCHING = (4, 3, 4, 2)


def run(quick: bool = False) -> dict:
    from serendip.data.io import read_table
    from serendip.data.labels import read_item_labels
    from serendip.data.recbole import import_recbole
    from serendip.embeddings import EmbeddingConfig, embed_catalogue
    from serendip.tree import ClusterConfig, build_cluster_tree

    if not (DATA / "ml-100k.inter").is_file():
        return {"skipped": f"{DATA} not present"}
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as d:
        import_recbole(DATA, d)
        items, interactions = read_table(d, "items"), read_table(d, "interactions")
        labels = read_item_labels(d)
    emb, _ = embed_catalogue(items, EmbeddingConfig(), interactions=interactions)
    result: dict = {"data": "ml-100k", "items": items.num_rows, "branching": list(BRANCHING),
                    "before_issue_14": {"ends_in_number": 28, "clusters": 160,
                                        "grounded_share": 0.031, "in_members_share": 0.438}}
    for name, lab in (("titles_and_genres", labels), ("titles_only", None)):
        t0 = time.perf_counter()
        tree = build_cluster_tree(items, emb, ClusterConfig(branching=BRANCHING, seed=0),
                                  labels=lab)
        rep = dict(tree.stats["descriptions"])
        rep["describe_s"] = tree.stats["timing"]["describe_s"]
        rep["build_s"] = round(time.perf_counter() - t0, 2)
        rng = np.random.default_rng(0)
        rest = [c for ids in tree.ids[1:] for c in ids]
        picks = list(tree.ids[0]) + sorted(rng.choice(rest, 16, replace=False).tolist())
        rep["samples"] = {c: f"{tree.descriptions[c]} (n={tree.sizes[c]})" for c in picks}
        result[name] = rep
        print(name, {k: v for k, v in rep.items() if k != "samples"}, flush=True)
    return result
