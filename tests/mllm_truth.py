"""Test helper: clusters, item_clusters and examples straight from the synthetic ground truth.

The latent taxonomy *is* a perfect cluster tree; each context item's label is its leaf's
bridge (the serendipitous level-3 sibling its viewers enjoy). This gives the fine-tuning tests
clean, learnable data independent of the clustering and curation stages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from serendip.prompts import PromptConfig, build_prompt, select_images


def truth_tables(synth_dir: Path) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(items, clusters, item_clusters) with path-style ids from truth/ (levels 1-4):
    :func:`serendip.testing.truth.truth_clusters` plus the items."""
    from serendip.testing.truth import truth_clusters

    d = Path(synth_dir)
    return (pq.read_table(d / "items.parquet"), *truth_clusters(d))


def truth_examples(synth_dir: Path, prompt: PromptConfig, n_items: int = 200,
                   test_fraction: float = 0.25, seed: int = 0) -> tuple[pa.Table, pa.Table,
                                                                            pa.Table, pa.Table]:
    """(examples, clusters, item_clusters, items): label = the context leaf's bridge l3."""
    d = Path(synth_dir)
    items, clusters, item_clusters = truth_tables(d)
    bridges = pq.read_table(d / "truth" / "bridges.parquet").to_pydict()
    bridge_of = dict(zip(bridges["leaf"], bridges["bridge_l3"]))
    topics = pq.read_table(d / "truth" / "item_topics.parquet").to_pydict()
    desc = dict(zip(clusters.column("cluster_id").to_pylist(),
                    clusters.column("description").to_pylist()))
    c3 = dict(zip(item_clusters.column("item_id").to_pylist(),
                  item_clusters.column("c3").to_pylist()))
    l3_path = {}
    for item_id, l3 in zip(topics["item_id"], topics["l3"]):
        l3_path[l3] = c3[item_id]
    rng = np.random.default_rng(seed)
    pick = rng.permutation(items.num_rows)[:n_items]
    item_rows = items.to_pylist()
    rows = []
    for rank, i in enumerate(pick):
        it = item_rows[int(i)]
        target = l3_path[bridge_of[topics["leaf"][int(i)]]]
        own = desc[c3[it["item_id"]]]
        rows.append({
            "context_item_id": it["item_id"], "target_cluster_id": target,
            "target_description": desc[target], "satisfaction": 0.9,
            "strategy": prompt.strategy, "prompt": build_prompt(prompt, it["title"], own),
            "images": select_images(prompt, it["thumbnail"], it["frames"]),
            "reasoning": own if prompt.strategy == "cot" else None,
            "split": "test" if rank < int(test_fraction * len(pick)) else "train"})
    examples = pa.Table.from_pylist(rows, schema=pa.schema([
        ("context_item_id", pa.string()), ("target_cluster_id", pa.string()),
        ("target_description", pa.string()), ("satisfaction", pa.float64()),
        ("strategy", pa.string()), ("prompt", pa.string()), ("images", pa.list_(pa.string())),
        ("reasoning", pa.string()), ("split", pa.string())]))
    return examples, clusters, item_clusters, items


def write_truth_workdir(synth_dir: Path, workdir: Path, prompt: PromptConfig,
                        n_items: int = 120, level: int = 3) -> Path:
    """A work directory as curation leaves it (tables + curation.json), from the ground truth."""
    import shutil

    from serendip.curation import CurationConfig, CurationManifest, write_curation
    from serendip.data.io import write_table

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for name in ("items.parquet", "interactions.parquet"):
        shutil.copy(Path(synth_dir) / name, workdir / name)
    examples, clusters, item_clusters, items = truth_examples(synth_dir, prompt, n_items)
    write_table(workdir, "clusters", clusters)
    write_table(workdir, "item_clusters", item_clusters, refs={"items": items})
    write_table(workdir, "examples", examples, refs={"items": items, "clusters": clusters})
    write_curation(workdir, CurationManifest(
        CurationConfig(level=level, delta=1, prompt=prompt),
        candidate_cluster_ids=tuple(c for c, lv in zip(clusters.column("cluster_id").to_pylist(),
                                                       clusters.column("level").to_pylist())
                                    if lv == level)))
    return workdir


# Small and fast: a few seconds of full training on ~100 examples.
TEST_TINY = dict(text_hidden=64, text_intermediate=128, vision_hidden=32, vision_layers=1,
                 text_layers=2, vocab_size=600)
_TRAINED: dict = {}


def trained_tiny(synth_dir: Path, root: Path, strategy: str = "video", steps: int = 40,
                 **overrides):
    """(FinetuneResult, examples, clusters, item_clusters) of a tiny fine-tune, cached per
    session so several test modules share one training run."""
    from serendip.mllm.config import FinetuneConfig
    from serendip.mllm.tiny import TinyVLMConfig
    from serendip.mllm.train import finetune

    key = (str(synth_dir), strategy, steps, tuple(sorted(overrides.items())))
    if key not in _TRAINED:
        prompt = PromptConfig(strategy, 2)
        examples, clusters, item_clusters, items = truth_examples(synth_dir, prompt, n_items=96)
        cfg = FinetuneConfig(steps=steps, batch_size=8, eval_every=max(steps // 4, 1),
                             save_every=max(steps // 2, 1), eval_max_examples=16,
                             reasoning_tokens=12, tiny=TinyVLMConfig(**TEST_TINY), **overrides)
        out = Path(root) / f"mllm-{strategy}-{len(_TRAINED)}"
        res = finetune(examples, clusters, cfg, out, prompt_config=prompt, items=items,
                       progress=False)
        _TRAINED[key] = (res, examples, clusters, item_clusters, cfg)
    return _TRAINED[key]
