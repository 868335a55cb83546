"""Do cluster trees follow real topics? (issue 14) MovieLens-100k genres as labels.

Imports ``../shared/data/ml-100k`` (RecBole atomic files) with ``serendip import``'s library
code, builds the 4/3/4/2 tree from each embedding variant and scores every level against the
primary genre (NMI, ARI; :func:`serendip.labels.label_agreement`):

* ``title``: title text alone (MiniLM, or TF-IDF when MiniLM is not installed);
* ``behaviour``: the co-engagement block alone (item × user TF-IDF → TruncatedSVD);
* ``behaviour_transitions``: the same from the item × item transition matrix;
* ``combined``: the default :class:`~serendip.embeddings.EmbeddingConfig` (all blocks with
  data; ml-100k has no images);
* ``shuffled``: the combined tree with its item → cluster assignment randomly permuted
  (same cluster sizes: the chance level).

Targets: combined NMI at levels 1–3 ≥ 1.5 × the title-only tree measured before issue 14
(0.034 / 0.055 / 0.104) and ≥ 2 × a shuffled tree (0.011 / 0.027 / 0.075). Also times the
pretrained image block per item (fresh and cached) against the hand-made blocks, and checks the
synthetic platform's taxonomy recovery (ARI per level) before/after. Skipped
(``{"skipped": ...}``) when the data set is absent.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-100k"
BRANCHING = (4, 3, 4, 2)
BEFORE_TITLE = {1: 0.034, 2: 0.055, 3: 0.104}
BEFORE_SHUFFLED = {1: 0.011, 2: 0.027, 3: 0.075}
OFF = dict(w_text=0.0, w_image=0.0, w_behaviour=0.0, w_shape=0.0, w_colour=0.0,
           w_texture=0.0, w_layout=0.0)


def variants() -> dict[str, dict]:
    return {
        "title": {**OFF, "w_text": 1.0},
        "behaviour": {**OFF, "w_behaviour": 1.0},
        "behaviour_transitions": {**OFF, "w_behaviour": 1.0, "behaviour_matrix": "transitions"},
        "combined": {},
    }


def tree_agreement(items, interactions, labels, ecfg, seed: int = 0) -> tuple[dict, object]:
    from serendip.embeddings import embed_catalogue
    from serendip.labels import label_agreement
    from serendip.tree import ClusterConfig, build_cluster_tree

    t0 = time.perf_counter()
    emb, embedder = embed_catalogue(items, ecfg, interactions=interactions)
    t1 = time.perf_counter()
    tree = build_cluster_tree(items, emb, ClusterConfig(branching=BRANCHING, seed=seed))
    res = label_agreement(tree.item_clusters, labels)
    res["embed_s"] = round(t1 - t0, 2)
    res["blocks"] = {k: v for k, v in embedder.block_report().items() if v["dim"]}
    return res, tree


def shuffled(tree, labels, seed: int = 0) -> dict:
    from serendip.labels import label_agreement

    ic = tree.item_clusters
    perm = np.random.default_rng(seed).permutation(ic.num_rows)
    cols = {"item_id": ic.column("item_id")}
    for c in ("c1", "c2", "c3", "c4"):
        cols[c] = ic.column(c).take(pa.array(perm))
    return label_agreement(pa.table(cols), labels)


def image_cost(n: int = 16) -> dict:
    """Seconds per item of the pretrained image block (fresh images, one thread)."""
    from PIL import Image

    from serendip.embeddings import _IMAGE_MEMO, EmbeddingConfig, image_features, visual_features

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i in range(n):
            p = Path(d) / f"{i}.png"
            Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(p)
            paths.append(str(p))
        out = {}
        for px in (224, 112):
            cfg = EmbeddingConfig(image_px=px)
            _IMAGE_MEMO.clear()
            image_features(paths[:2], cfg)            # model load
            _IMAGE_MEMO.clear()
            t0 = time.perf_counter()
            image_features(paths, cfg)
            out[f"pretrained_{px}px_s_per_item"] = round((time.perf_counter() - t0) / n, 4)
            t0 = time.perf_counter()
            image_features(paths, cfg)
            out[f"pretrained_{px}px_cached_s_per_item"] = round((time.perf_counter() - t0) / n, 6)
        t0 = time.perf_counter()
        visual_features(paths, EmbeddingConfig())
        out["handmade_visual_s_per_item"] = round((time.perf_counter() - t0) / n, 4)
    return out


BEFORE_WEIGHTS = dict(w_text=0.3, w_image=0.0, w_behaviour=0.0, w_shape=1.0, w_colour=1.0,
                      w_texture=0.6, w_layout=0.2)   # the pre-issue-14 blocks and weights


def synthetic_ari() -> dict:
    """Taxonomy recovery (ARI per level against the truth) on the test suite's synthetic
    platform (600 items, 2/2/3/2): the blocks and weights before issue 14 vs the defaults,
    with and without interactions."""
    import pyarrow.parquet as pq
    from sklearn.metrics import adjusted_rand_score

    from serendip.data.io import read_table
    from serendip.data.synth import SynthConfig, write_synth
    from serendip.embeddings import EmbeddingConfig, embed_catalogue
    from serendip.tree import ClusterConfig, build_cluster_tree

    branching = (2, 2, 3, 2)
    out: dict = {"items": 600, "branching": list(branching)}
    with tempfile.TemporaryDirectory() as d:
        write_synth(SynthConfig(items=600, users=200, interactions=8000, seed=7,
                                branching=branching), d)
        items, inter = read_table(d, "items"), read_table(d, "interactions")
        truth = pq.read_table(Path(d) / "truth" / "item_topics.parquet").to_pandas()
        truth = truth.set_index("item_id").loc[items.column("item_id").to_pylist()]
        for name, over, use_inter in (("before", BEFORE_WEIGHTS, False),
                                      ("default_no_interactions", {}, False),
                                      ("default", {}, True)):
            t0 = time.perf_counter()
            emb, _ = embed_catalogue(items, EmbeddingConfig(**over),
                                     interactions=inter if use_inter else None)
            embed_s = time.perf_counter() - t0
            tree = build_cluster_tree(items, emb, ClusterConfig(branching=branching, seed=0))
            ic = tree.item_clusters.to_pandas()
            out[name] = {f"level{lvl}": round(float(adjusted_rand_score(
                truth[t].to_numpy(), ic[f"c{lvl}"])), 3)
                for lvl, t in ((1, "l1"), (2, "l2"), (3, "l3"), (4, "leaf"))}
            out[name]["embed_s"] = round(embed_s, 1)
    return out


def representation_cost(n_items: int = 600) -> dict:
    """Milliseconds per item of the whole clustering representation on one thread, fresh (no
    image cache; models loaded beforehand): the blocks before issue 14 (text + hand-made
    visual) vs the defaults (+ pretrained image, + behaviour), on the synthetic platform."""
    import torch

    from serendip.data.io import read_table
    from serendip.data.synth import SynthConfig, write_synth
    from serendip.embeddings import _IMAGE_MEMO, EmbeddingConfig, embed_catalogue

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: dict = {"items": n_items, "threads": 1}
    try:
        with tempfile.TemporaryDirectory() as d:
            write_synth(SynthConfig(items=n_items, users=200, interactions=8000, seed=7), d)
            items, inter = read_table(d, "items"), read_table(d, "interactions")
            embed_catalogue(items.slice(0, 8), EmbeddingConfig(), base_dir=d)   # model loads
            for name, over, it in (("before_ms", {"w_image": 0, "w_behaviour": 0}, None),
                                   ("default_ms", {}, inter)):
                _IMAGE_MEMO.clear()
                t0 = time.perf_counter()
                embed_catalogue(items, EmbeddingConfig(**over), base_dir=d, interactions=it)
                out[name] = round((time.perf_counter() - t0) / n_items * 1000, 2)
    finally:
        torch.set_num_threads(threads)
    out["ratio"] = round(out["default_ms"] / out["before_ms"], 2)
    return out


def run(quick: bool = False) -> dict:
    from serendip.data.io import read_table
    from serendip.data.recbole import import_recbole
    from serendip.embeddings import EmbeddingConfig
    from serendip.labels import read_item_labels

    if not (DATA / "ml-100k.inter").is_file():
        return {"skipped": f"{DATA} not present"}
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as d:
        summary = import_recbole(DATA, d)
        items, interactions = read_table(d, "items"), read_table(d, "interactions")
        labels = read_item_labels(d)
    result: dict = {"data": "ml-100k", "items": summary["items"],
                    "interactions": summary["interactions"], "branching": list(BRANCHING),
                    "label": "primary genre (first of class:token_seq)", "variants": {}}
    tree = None
    for name, over in variants().items():
        res, t = tree_agreement(items, interactions, labels, EmbeddingConfig(**over))
        result["variants"][name] = res
        print(name, {k: v for k, v in res.items() if k.startswith("level")}, flush=True)
        if name == "combined":
            tree = t
    result["variants"]["shuffled"] = shuffled(tree, labels)
    comb = result["variants"]["combined"]
    shuf = result["variants"]["shuffled"]
    result["targets"] = {
        f"level{lvl}": {"combined_nmi": comb[f"level{lvl}"]["nmi"],
                        "need_vs_title_before": round(1.5 * BEFORE_TITLE[lvl], 4),
                        "need_vs_shuffled_before": round(2 * BEFORE_SHUFFLED[lvl], 4),
                        "need_vs_shuffled_now": round(2 * shuf[f"level{lvl}"]["nmi"], 4)}
        for lvl in (1, 2, 3)}
    result["meets_target"] = all(
        v["combined_nmi"] >= max(v["need_vs_title_before"], v["need_vs_shuffled_before"],
                                 v["need_vs_shuffled_now"]) for v in result["targets"].values())
    if not quick:
        result["image_cost"] = image_cost()
        result["representation_cost"] = representation_cost()
        result["synthetic_ari"] = synthetic_ari()
    return result
