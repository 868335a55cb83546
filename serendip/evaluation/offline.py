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
                   tracker: Tracker | None = None, model_name: str | None = None) -> dict:
    """The offline report of ``model`` on the held-out split (paper §3.1), written as ``mllm_offline.json``
    and ``mllm_offline.md`` to ``out_dir`` (default ``<workdir>/evaluation``) and, with a
    tracker, logged as a ``serendip-evaluate`` run.

    Args:
        workdir: directory with items (and, unless given separately, the examples and tree).
        model: a loaded ``ClusterPredictor`` or a model directory (``serendip.platform.tracking
            .load_model`` resolves registry URIs).
        k: recall@k under the trie (k >= 1). max_examples: cap on held-out examples.
        model_name: how the run names the model (default: the predictor's version).

    Returns:
        The report (metrics in [0, 1], ``choice_baselines``) plus ``markdown``.

    Raises:
        SchemaError: a missing or malformed input table. SerendipError: no held-out split.
    """
    from serendip.data.io import atomic_write_bytes
    from serendip.evaluation.baselines import baselines_stage
    from serendip.mllm.evaluation import offline_report, report_markdown
    from serendip.mllm.inference import ClusterPredictor
    from serendip.mllm.workdir import load_inputs, rebuild_examples

    tracker = tracker if tracker is not None else NullTracker()
    inp = load_inputs(workdir, tree_dir, examples_dir)
    predictor = (model if isinstance(model, ClusterPredictor)
                 else ClusterPredictor.load(model, base_dir=str(inp.workdir)))
    examples = rebuild_examples(inp, predictor.prompt_config)
    rep = offline_report(predictor, examples, inp.item_clusters, inp.clusters, inp.delta,
                         k=k, max_examples=max_examples, truth_dir=inp.workdir)
    # The baselines a platform team tries first (issue 15), on all serendipitous pairs of
    # held-out context items: the promotion gate reads them from here (``choice_baselines``).
    choice = baselines_stage(inp.workdir, predictor, tree_dir=tree_dir,
                             examples_dir=examples_dir)
    choice_md = choice.pop("markdown")
    rep["choice_baselines"] = choice
    out = Path(out_dir) if out_dir else inp.workdir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    md = report_markdown(rep) + "\n\n" + choice_md
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
