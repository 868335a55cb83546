"""Offline evaluation of a fine-tuned predictor on the held-out split
(:func:`evaluate_predictor`), with two non-learned baselines for scale (paper §3.1 reports
curves without them; we add them so a recall figure can be read on its own):

* ``most_frequent`` — always answer the most frequent target cluster of the training split;
* ``random_sibling`` — answer a uniformly random *sibling* of the context item's level-l
  cluster: same ancestor at level l-δ, different cluster. Serendipitous labels are siblings by
  construction, so this baseline knows the hierarchy and is strong when clusters have few
  siblings. Its recall is reported as the exact expectation (1/#siblings when the label is a
  sibling), not one random draw.

Both always name a valid cluster, so their match rate is 1.0.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from serendip.errors import SerendipError
from serendip.metrics import recall_at_k
from serendip.mllm.data import split

if TYPE_CHECKING:
    from serendip.mllm.inference import ClusterPredictor



def evaluate_predictor(predictor: ClusterPredictor, examples: pa.Table,
                       max_examples: int | None = None) -> dict:
    """Held-out match rate and recall, unconstrained and with the trie (k=1)."""
    from serendip.metrics import match_rate, recall

    if max_examples and examples.num_rows > max_examples:   # evenly spaced, not the head
        idx = np.unique(np.linspace(0, examples.num_rows - 1, max_examples).astype(np.int64))
        examples = examples.take(pa.array(idx))
    prompts = examples.column("prompt").to_pylist()
    images = [x or [] for x in examples.column("images").to_pylist()]
    labels = examples.column("target_description").to_pylist()
    out = {"n": examples.num_rows}
    for constrained, suffix in ((False, ""), (True, "_constrained")):
        preds = predictor.predict_prompts(prompts, images, k=1, constrained=constrained)
        answers = [p[0].description if p else None for p in preds]
        out["match_rate" + suffix] = match_rate(answers, predictor.descriptions)
        out["recall" + suffix] = recall(answers, labels)
    return out


def ancestor(cluster_id: str, parent: dict[str, str | None], up: int) -> str | None:
    node: str | None = cluster_id
    for _ in range(up):
        if node is None:
            return None
        node = parent.get(node)
    return node


def baselines(examples: pa.Table, item_clusters: pa.Table, clusters: pa.Table, level: int,
              delta: int = 1) -> dict[str, dict]:
    """Held-out recall of the two baselines (see module docstring)."""
    train, test = split(examples, "train"), split(examples, "test")
    if test.num_rows == 0:
        raise SerendipError("no held-out examples (split == 'test')", field="examples",
                            fix="curate with test_fraction > 0")
    labels = test.column("target_cluster_id").to_pylist()
    counts = Counter(train.column("target_cluster_id").to_pylist() or labels)
    top = min(c for c, n in counts.items() if n == max(counts.values()))
    mf = sum(t == top for t in labels) / len(labels)

    parent = dict(zip(clusters.column("cluster_id").to_pylist(),
                      clusters.column("parent_id").to_pylist()))
    level_of = dict(zip(clusters.column("cluster_id").to_pylist(),
                        clusters.column("level").to_pylist()))
    children: dict[str | None, list[str]] = {}
    for c, lv in level_of.items():
        if lv == level:
            children.setdefault(ancestor(c, parent, delta), []).append(c)
    own = dict(zip(item_clusters.column("item_id").to_pylist(),
                   item_clusters.column(f"c{level}").to_pylist()))
    expected, n_sib = 0.0, []
    for ctx, target in zip(test.column("context_item_id").to_pylist(), labels):
        c = own.get(ctx)
        if c is None:
            raise SerendipError(f"context item {ctx} has no cluster", field="item_clusters",
                                fix="assign every item to the tree (serendip cluster)")
        sib = [s for s in children.get(ancestor(c, parent, delta), []) if s != c]
        n_sib.append(len(sib))
        if target in sib:
            expected += 1.0 / len(sib)
    return {"most_frequent": {"recall": mf, "match_rate": 1.0, "cluster_id": top},
            "random_sibling": {"recall": expected / len(labels), "match_rate": 1.0,
                               "mean_siblings": sum(n_sib) / len(n_sib)}}


def held_out(examples: pa.Table, max_examples: int | None = None) -> pa.Table:
    """The ``test`` split, cut to ``max_examples`` evenly spaced rows (not the head).

    Raises:
        SerendipError: no held-out examples."""
    test = split(examples, "test")
    if test.num_rows == 0:
        raise SerendipError("no held-out examples (split == 'test')", field="examples",
                            fix="curate with test_fraction > 0")
    if max_examples and test.num_rows > max_examples:
        import numpy as np

        idx = np.unique(np.linspace(0, test.num_rows - 1, max_examples).astype(np.int64))
        test = test.take(pa.array(idx))
    return test


def offline_report(predictor, examples: pa.Table, item_clusters: pa.Table | None = None,
                   clusters: pa.Table | None = None, delta: int = 1, k: int = 5,
                   max_examples: int | None = None) -> dict:
    """Held-out metrics of ``predictor`` on :func:`held_out` (k=1 with and without the trie,
    recall@k under the trie) plus the baselines and the model's lift over the better one."""
    test = held_out(examples, max_examples)
    out: dict = {"model_version": predictor.model_version, "level": predictor.level,
                 "strategy": predictor.prompt_config.strategy}
    out.update(evaluate_predictor(predictor, test))
    if k > 1:
        ranked = predictor.predict_prompts(test.column("prompt").to_pylist(),
                                           [x or [] for x in test.column("images").to_pylist()],
                                           k=k, constrained=True)
        out[f"recall_at_{k}_constrained"] = recall_at_k(
            [[p.description for p in r] for r in ranked],
            test.column("target_description").to_pylist())
    if item_clusters is not None and clusters is not None:
        scored = pa.concat_tables([split(examples, "train"), test])  # the same test rows
        base = baselines(scored, item_clusters, clusters, predictor.level, delta)
        out["baselines"] = base
        best = max(b["recall"] for b in base.values())
        out["lift_over_best_baseline"] = (out["recall_constrained"] / best) if best > 0 \
            else float("inf")
    return out


def report_markdown(rep: dict) -> str:
    """A small markdown table of an :func:`offline_report`."""
    k_key = next((x for x in rep if x.startswith("recall_at_")), None)
    lines = ["| model | match rate | recall | match rate (trie) | recall (trie) |"
             + (f" {k_key.replace('_', ' ')} |" if k_key else ""),
             "|---|---|---|---|---|" + ("---|" if k_key else "")]
    lines.append(f"| {rep['model_version'] or 'model'} | {rep['match_rate']:.3f} | "
                 f"{rep['recall']:.3f} | {rep['match_rate_constrained']:.3f} | "
                 f"{rep['recall_constrained']:.3f} |" + (f" {rep[k_key]:.3f} |" if k_key else ""))
    for name, b in rep.get("baselines", {}).items():
        lines.append(f"| baseline: {name.replace('_', ' ')} | 1.000 | {b['recall']:.3f} | "
                     f"1.000 | {b['recall']:.3f} |" + (" |" if k_key else ""))
    if "lift_over_best_baseline" in rep:
        lines.append("")
        lines.append(f"Recall (trie) is {rep['lift_over_best_baseline']:.2f}x the better "
                     f"baseline on {rep['n']} held-out examples.")
    return "\n".join(lines)


def plot_history(history: list[dict], path, baselines_: dict | None = None, title: str = ""):
    """Recall and match rate vs steps (with and without the trie) as a PNG; returns the path."""
    import os
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    rows = [h for h in history if "recall" in h]
    fig, (ax_r, ax_m) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = [h["step"] for h in rows]
    ax_r.plot(steps, [h["recall"] for h in rows], label="free generation")
    ax_r.plot(steps, [h["recall_constrained"] for h in rows], ls="--", label="with trie")
    for i, (name, b) in enumerate((baselines_ or {}).items()):
        ax_r.axhline(b["recall"], color=f"C{i + 3}", lw=0.8, ls=":",
                     label=f"baseline: {name.replace('_', ' ')}")
    ax_m.plot(steps, [h["match_rate"] for h in rows], label="free generation")
    ax_m.plot(steps, [h["match_rate_constrained"] for h in rows], ls="--", label="with trie")
    ax_r.set_title("Held-out recall")
    ax_m.set_title("Held-out match rate")
    for ax in (ax_r, ax_m):
        ax.set_xlabel("training steps")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
