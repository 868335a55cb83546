"""Offline evaluation of a fine-tuned MLLM on the held-out split of a work directory (paper
§3.1: match rate and recall, with and without the trie; recall@k), the two simple baselines,
and the choice baselines of :func:`serendip.evaluation.baselines.baselines_stage` that the
promotion gate compares with.

:func:`evaluate_stage` is the one entry called alike by ``serendip evaluate``, the KFP
``evaluate`` component and the demo.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from serendip.tracking import NullTracker, Tracker, is_tracking


def evaluate_stage(workdir: str | os.PathLike, model, out_dir: str | os.PathLike | None = None,
                   *, k: int = 5, max_examples: int | None = None,
                   tree_dir: str | os.PathLike | None = None,
                   examples_dir: str | os.PathLike | None = None,
                   tracker: Tracker | None = None, model_name: str | None = None,
                   retriever_dir: str | os.PathLike | None = None) -> dict:
    """The offline report of ``model`` on the held-out split (paper §3.1), written as ``mllm_offline.json``
    and ``mllm_offline.md`` to ``out_dir`` (default ``<workdir>/evaluation``) and, with a
    tracker, logged as a ``serendip-evaluate`` run.

    Args:
        workdir: directory with items (and, unless given separately, the examples and tree).
        model: a loaded ``ClusterPredictor``, a model directory or a registry URI
            (:func:`serendip.mllm.models.load_predictor`).
        k: recall@k under the trie (k >= 1). max_examples: cap on held-out examples.
        model_name: how the run names the model (default: the predictor's version).
        retriever_dir: the sequence retriever for the retriever-ranked-sibling baseline
            (default ``<workdir>/retriever`` when it exists; KFP passes its artifact).

    Returns:
        The report (metrics in [0, 1], ``choice_baselines``) plus ``markdown``.

    Raises:
        SchemaError: a missing or malformed input table. SerendipError: no held-out split.
    """
    from serendip.data.io import atomic_write_bytes
    from serendip.evaluation.baselines import baselines_stage
    from serendip.mllm.evaluation import held_out, offline_report, report_markdown
    from serendip.mllm.models import load_predictor
    from serendip.mllm.workdir import load_inputs, rebuild_examples

    tracker = tracker if tracker is not None else NullTracker()
    inp = load_inputs(workdir, tree_dir, examples_dir)
    predictor = load_predictor(model, inp.workdir)
    examples = rebuild_examples(inp, predictor.prompt_config)
    rep = offline_report(predictor, examples, inp.item_clusters, inp.clusters, inp.delta,
                         k=k, max_examples=max_examples)
    truth_md = ""
    rates = true_bridge_rates(inp.workdir, predictor, held_out(examples, max_examples),
                              inp.item_clusters)
    if rates:
        rep["true_bridge_rate"], rep["label_true_bridge_rate"] = rates["answers"], rates["labels"]
        truth_md = (f"\n\nGround truth (synthetic): {rates['answers']:.3f} of answers name the "
                    f"context's true bridge topic; only {rates['labels']:.3f} of the log-derived "
                    "labels do (the ceiling for recall).")
    # The baselines a platform team tries first (issue 15), on all serendipitous pairs of
    # held-out context items: the promotion gate reads them from here (``choice_baselines``).
    choice = baselines_stage(inp.workdir, predictor, tree_dir=tree_dir,
                             examples_dir=examples_dir, retriever_dir=retriever_dir)
    choice_md = choice.pop("markdown")
    rep["choice_baselines"] = choice
    out = Path(out_dir) if out_dir else inp.workdir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    md = report_markdown(rep) + truth_md + "\n\n" + choice_md
    atomic_write_bytes(out / "mllm_offline.json", json.dumps(rep, indent=2).encode())
    atomic_write_bytes(out / "mllm_offline.md", (md + "\n").encode())
    if is_tracking(tracker):
        with tracker.start_run("serendip-evaluate", run_name="offline",
                               params={"model": model_name or "champion",
                                       "model_version": predictor.model_version, "k": k}):
            tracker.log_metrics({k_: v for k_, v in rep.items() if isinstance(v, (int, float))})
            tracker.log_artifact(out / "mllm_offline.md")
    rep["markdown"] = md
    return rep


def true_bridge_rates(truth_dir, predictor, test, item_clusters) -> dict | None:
    """Synthetic platform only (level 3): the share of ``predictor``'s top-1 answers on the
    held-out rows ``test``, and of their labels, naming a cluster whose items mostly belong to
    the context item's true bridge topic (the ground truth of :mod:`serendip.data.synth`).
    Labels come from noisy logs, so the label rate is the ceiling that recall against them can
    reach. None without ground truth under ``truth_dir`` or at another level."""
    from collections import Counter

    import pyarrow.parquet as pq

    from serendip.evaluation.truth import GroundTruth

    if predictor.level != 3 or not (Path(truth_dir) / "truth" / "truth.json").exists():
        return None
    gt = GroundTruth.load(truth_dir)
    context_ids = test.column("context_item_id").to_pylist()
    try:
        bridge = [gt.bridge_l3(c) for c in context_ids]
    except KeyError:
        return None
    top1 = predictor.predict_prompts(test.column("prompt").to_pylist(),
                                     [x or [] for x in test.column("images").to_pylist()])
    predicted = [p[0].cluster_id if p else None for p in top1]
    labels = test.column("target_cluster_id").to_pylist()
    topics = pq.read_table(Path(truth_dir) / "truth" / "item_topics.parquet",
                           columns=["item_id", "l3"]).to_pydict()
    latent = dict(zip(topics["item_id"], topics["l3"]))
    votes: dict[str, Counter] = {}
    for item, c3 in zip(item_clusters.column("item_id").to_pylist(),
                        item_clusters.column("c3").to_pylist()):
        if item in latent:
            votes.setdefault(c3, Counter())[latent[item]] += 1
    major = {c: v.most_common(1)[0][0] for c, v in votes.items()}
    n = len(context_ids)
    return {"answers": sum(major.get(p) == b for p, b in zip(predicted, bridge)) / n,
            "labels": sum(major.get(t) == b for t, b in zip(labels, bridge)) / n}
