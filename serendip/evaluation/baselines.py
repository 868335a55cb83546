"""Cluster-choice baselines a platform team would try first, and the held-out cases that
decide whether the MLLM beats them (issue 15; paper §2–§3.1).

The task: for a context item, name the serendipitous cluster (one of its candidates,
:mod:`serendip.candidates`) that users go to next and are satisfied with. Every method answers
a **ranking of the context's candidates** — never its own cluster — computed from the
**training logs only**:

* ``random_sibling`` — a uniformly random candidate. Reported as its exact expectation:
  recall = 1/|candidates| for a case whose label is a candidate, top-k recall
  = min(k, |candidates|)/|candidates| (no sampling noise).
* ``transition`` — transition statistics: the candidate most often chosen next after items of
  the context's own cluster, each logged transition weighted by its satisfaction
  (score(a → b) = Σ satisfaction over training transitions from an item of cluster a to an item
  of cluster b). Ties: more satisfaction flowing into b overall, then cluster id.
* ``retriever`` — the candidate the sequence retriever ranks highest for the context: the
  retriever scores every item with the history ``[context]`` (its public ``retrieve_batch``,
  the context itself masked) and a cluster's score is the **maximum** of its items' scores
  (the best item the retriever would show from it; ``agg="sum"`` / ``"mean"`` also
  available). Ties: cluster id.

Held-out cases (:func:`heldout_cases`): context items are split train/test by the curation
stage's hash split (:func:`serendip.curation.split_by_context`, same seed and fraction, so the
curated test examples' contexts are held out too). **Every** serendipitous transition of a
held-out context item is a case — thousands on ml-100k instead of the ~100 curated top-10
test examples — with its label = the next item's level-l cluster and weight = its satisfaction.
Statistics come from the remaining (training) transitions only.

Metrics (:func:`choice_metrics`): satisfaction-weighted recall (top-1) and top-k recall over
the candidates, each with a 95% percentile bootstrap interval that resamples **context items**
(a context's cases are not independent), and the paired difference against a reference method
under the same resamples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serendip.candidates import CandidateIndex
from serendip.errors import ConfigError, SerendipError

METHODS = ("random_sibling", "transition", "retriever")


@dataclass
class ChoiceCases:
    """Held-out cluster-choice cases: one row per case (aligned arrays)."""

    context_ids: list[str]
    labels: list[str]               # level-l cluster of the next item (a candidate)
    weights: np.ndarray             # float [n]: satisfaction (1.0 for unweighted cases)
    name: str = "cases"

    def __post_init__(self) -> None:
        if not (len(self.context_ids) == len(self.labels) == len(self.weights)):
            raise SerendipError("context_ids, labels and weights differ in length",
                                field="cases", fix="pass aligned arrays")

    def __len__(self) -> int:
        return len(self.labels)


# ------------------------------------------------------------------ cases
def split_transitions(interactions: pa.Table, test_fraction: float = 0.2, seed: int = 0
                      ) -> tuple[pa.Table, pa.Table, set[str]]:
    """(training transitions, held-out transitions, held-out context ids), split by context
    item with the curation stage's hash split.

    Raises:
        ConfigError: ``test_fraction`` outside (0, 1).
    """
    from serendip.curation.aggregate import split_logged_transitions

    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction={test_fraction}", field="test_fraction",
                          fix="use a fraction in (0, 1), e.g. 0.2")
    return split_logged_transitions(interactions, test_fraction, seed)


def heldout_cases(heldout: pa.Table, item_clusters: pa.Table, index: CandidateIndex,
                  weighted: bool = True) -> ChoiceCases:
    """Every serendipitous transition of the held-out context items (see module docstring).

    Raises:
        SerendipError: no held-out transition is serendipitous at (level, delta).
    """
    ctx = heldout.column("context_item_id").to_pylist()
    nxt = heldout.column("next_item_id").to_pylist()
    label = index.own_cluster(nxt)
    ok = index.is_candidate(ctx, label)
    if not ok.any():
        raise SerendipError(f"no held-out transition is serendipitous at level={index.level}, "
                            f"delta={index.delta}", field="level/delta",
                            fix="use a larger delta or another level (see curation.json)")
    sat = heldout.column("satisfaction").to_numpy().astype(np.float64)
    w = sat[ok] if weighted else np.ones(int(ok.sum()))
    keep = np.flatnonzero(ok)
    return ChoiceCases([ctx[i] for i in keep], [label[i] for i in keep], w,
                       "all serendipitous pairs of held-out contexts")


def curated_cases(selected: pa.Table, split: str = "test") -> ChoiceCases:
    """The curated top-k examples of one split (``curated_pairs.parquet`` or the examples
    table), unweighted as the paper's recall."""
    t = selected.filter(pc.equal(selected.column("split"), split))
    if t.num_rows == 0:
        raise SerendipError(f"no curated examples with split == {split!r}", field="split",
                            fix="curate with test_fraction > 0")
    return ChoiceCases(t.column("context_item_id").to_pylist(),
                       t.column("target_cluster_id").to_pylist(), np.ones(t.num_rows),
                       f"curated top-k, {split} split")


# ------------------------------------------------------------------ baselines
def random_sibling_hits(cases: ChoiceCases, index: CandidateIndex, k: int = 1) -> np.ndarray:
    """Expected hit per case of a uniformly random candidate ranking: min(k, n)/n when the
    label is a candidate (n = |candidates|), else 0."""
    n = index.n_candidates(cases.context_ids).astype(np.float64)
    is_cand = index.is_candidate(cases.context_ids, cases.labels)
    return np.where(is_cand & (n > 0), np.minimum(k, n) / np.maximum(n, 1), 0.0)


def transition_rankings(train: pa.Table, index: CandidateIndex,
                        context_ids: Sequence[str]) -> dict[str, list[str]]:
    """context → its candidates ranked by transition statistics (see module docstring;
    :meth:`serendip.transitions.TransitionPrior.ranking`)."""
    from serendip.transitions import TransitionPrior

    prior = TransitionPrior.fit(train, index)
    by_cluster: dict[str, list[str]] = {}
    out: dict[str, list[str]] = {}
    for ctx, own, cand in zip(context_ids, index.own_cluster(context_ids),
                              index.candidates(context_ids)):
        if own is None:
            out[ctx] = []
            continue
        if own not in by_cluster:
            by_cluster[own] = prior.ranking(own, cand)
        out[ctx] = by_cluster[own]
    return out


def retriever_rankings(retriever, index: CandidateIndex, context_ids: Sequence[str],
                       agg: str = "max", batch: int = 256) -> dict[str, list[str]]:
    """context → its candidates ranked by the retriever (see module docstring).

    Raises:
        ConfigError: ``agg`` not one of max, sum, mean.
    """
    if agg not in ("max", "sum", "mean"):
        raise ConfigError(f"agg={agg!r}", field="agg", fix="use max, sum or mean")
    n_items = len(retriever.item_ids)
    item_rows = index._codes(retriever.item_ids)
    item_cluster = np.where(item_rows >= 0, index.own[np.maximum(item_rows, 0)], -1)
    pos_of = {i: p for p, i in enumerate(retriever.item_ids)}
    code_of = {c: j for j, c in enumerate(index.cluster_ids)}
    uniq = sorted(set(context_ids))
    out: dict[str, list[str]] = {}
    for s in range(0, len(uniq), batch):
        chunk = uniq[s:s + batch]
        res = retriever.retrieve_batch([[c] for c in chunk], [None] * len(chunk), n_items)
        for ctx, ranked in zip(chunk, res):
            cand = index.candidates([ctx])[0]
            if not cand:
                out[ctx] = []
                continue
            score = np.full(n_items, np.nan)
            for item, sc in ranked:
                score[pos_of[item]] = sc
            codes = np.asarray([code_of[c] for c in cand])
            vals = []
            for code in codes:
                v = score[(item_cluster == code) & ~np.isnan(score)]
                vals.append(-np.inf if len(v) == 0 else
                            float(v.max() if agg == "max" else v.sum() if agg == "sum"
                                  else v.mean()))
            order = np.lexsort((codes, -np.asarray(vals)))
            out[ctx] = [cand[j] for j in order]
    return out


def ranking_hits(rankings: Mapping[str, Sequence[str]], cases: ChoiceCases, k: int = 1
                 ) -> np.ndarray:
    """Hit per case: is the label among the context's first ``k`` ranked clusters?"""
    return np.asarray([lab in list(rankings.get(c, []))[:k]
                       for c, lab in zip(cases.context_ids, cases.labels)], dtype=np.float64)


# ------------------------------------------------------------------ metrics with intervals
def _cluster_bootstrap(cases: ChoiceCases, n_boot: int, seed: int):
    ctx = np.asarray(cases.context_ids, dtype=object)
    uniq, inv = np.unique(ctx, return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(uniq), np.full(len(uniq), 1.0 / len(uniq)), size=n_boot)
    return inv, len(uniq), counts.astype(np.float64)


def weighted_recall(hits: np.ndarray, cases: ChoiceCases, n_boot: int = 1000, seed: int = 0,
                    reference: np.ndarray | None = None) -> dict:
    """Satisfaction-weighted mean of ``hits`` (range [0, 1]) with a 95% percentile interval
    from a bootstrap over context items; with ``reference``, also the paired difference
    (hits − reference) and its interval under the same resamples."""
    if len(cases) == 0:
        raise SerendipError("no cases to score", field="cases",
                            fix="evaluate on at least one held-out case")
    inv, n_ctx, counts = _cluster_bootstrap(cases, n_boot, seed)
    w = cases.weights
    W = np.bincount(inv, weights=w, minlength=n_ctx)

    def stat(h):
        S = np.bincount(inv, weights=w * h, minlength=n_ctx)
        point = float(S.sum() / max(W.sum(), 1e-12))
        boot = (counts @ S) / np.maximum(counts @ W, 1e-12)
        return point, boot

    p, b = stat(hits)
    out = {"value": p, "ci95": [float(np.percentile(b, 2.5)), float(np.percentile(b, 97.5))]}
    if reference is not None:
        pr, br = stat(reference)
        d = b - br
        out["diff"] = p - pr
        out["diff_ci95"] = [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))]
        out["lift"] = (p / pr) if pr > 0 else None
    return out


def choice_metrics(method_hits: Mapping[str, Mapping[int, np.ndarray]], cases: ChoiceCases,
                   reference: str | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Per method: recall (k=1) and top-k recall over the candidates for each k given, each
    with its interval; against ``reference`` (e.g. the best baseline) also the paired
    difference. ``method_hits[method][k]`` are per-case hits (see :func:`ranking_hits`)."""
    out: dict = {"cases": cases.name, "n_cases": len(cases),
                 "n_contexts": len(set(cases.context_ids)),
                 "weighted": bool(np.any(cases.weights != 1.0)), "methods": {}}
    for m, by_k in method_hits.items():
        out["methods"][m] = {}
        for k, h in sorted(by_k.items()):
            ref = method_hits[reference][k] if reference and reference != m \
                and k in method_hits.get(reference, {}) else None
            name = "recall" if k == 1 else f"recall_at_{k}"
            out["methods"][m][name] = weighted_recall(h, cases, n_boot, seed, ref)
    return out


def best_baseline(metrics: dict, methods: Sequence[str] = METHODS) -> str:
    """The baseline with the highest recall in a :func:`choice_metrics` result."""
    have = [m for m in methods if m in metrics["methods"]]
    if not have:
        raise SerendipError("no baseline in the metrics", field="methods",
                            fix=f"compute at least one of {', '.join(methods)}")
    return max(have, key=lambda m: (metrics["methods"][m]["recall"]["value"], m == "transition"))


def evaluate_baselines(interactions: pa.Table, item_clusters: pa.Table, clusters: pa.Table,
                       level: int = 3, delta: int = 1, test_fraction: float = 0.2,
                       seed: int = 0, retriever=None, curated: pa.Table | None = None,
                       model_rankings: Mapping[str, Sequence[str]] | None = None,
                       ks: Sequence[int] = (1, 5), n_boot: int = 1000) -> dict:
    """Every baseline (and, if given, the model's candidate rankings) on both case sets:
    all serendipitous pairs of held-out contexts (weighted) and the curated test split.

    ``model_rankings``: context → the model's ranked clusters (restricted to candidates,
    :func:`serendip.candidates.restrict_to_candidates`). The model is compared with the best
    baseline by the paired difference and its interval.

    Raises:
        ConfigError: bad level/delta/test_fraction. SerendipError: no serendipitous cases.
    """
    index = CandidateIndex.build(item_clusters, clusters, level, delta)
    train, held, held_ctx = split_transitions(interactions, test_fraction, seed)
    sets = [heldout_cases(held, item_clusters, index)]
    if curated is not None:
        cur = curated_cases(curated)
        sets.append(cur)
    out: dict = {"level": level, "delta": delta, "test_fraction": test_fraction, "seed": seed,
                 "train_transitions": train.num_rows, "heldout_transitions": held.num_rows,
                 "heldout_contexts": len(held_ctx), "case_sets": []}
    all_ctx = sorted({c for s in sets for c in s.context_ids})
    ranks = {"transition": transition_rankings(train, index, all_ctx)}
    if retriever is not None:
        ranks["retriever"] = retriever_rankings(retriever, index, all_ctx)
    for cases in sets:
        hits: dict[str, dict[int, np.ndarray]] = {
            "random_sibling": {k: random_sibling_hits(cases, index, k) for k in ks}}
        for name, r in ranks.items():
            hits[name] = {k: ranking_hits(r, cases, k) for k in ks}
        base = choice_metrics(hits, cases, n_boot=n_boot, seed=seed)
        best = best_baseline(base)
        if model_rankings is not None:
            hits["model"] = {k: ranking_hits(model_rankings, cases, k) for k in ks}
        res = choice_metrics(hits, cases, reference=best, n_boot=n_boot, seed=seed)
        res["best_baseline"] = best
        res["mean_candidates"] = float(index.n_candidates(cases.context_ids).mean())
        out["case_sets"].append(res)
    return out


def baselines_markdown(rep: dict) -> str:
    """The :func:`evaluate_baselines` report as markdown tables (one per case set)."""
    lines = []
    for cs in rep["case_sets"]:
        ks = [k for k in next(iter(cs["methods"].values()))]
        lines.append(f"**{cs['cases']}**: {cs['n_cases']} cases, {cs['n_contexts']} context "
                     f"items, {'satisfaction-weighted' if cs['weighted'] else 'unweighted'}, "
                     f"mean {cs['mean_candidates']:.1f} candidates; 95% bootstrap intervals "
                     f"over context items; best baseline: {cs['best_baseline']}.\n")
        lines.append("| method | " + " | ".join(ks) + " | diff vs best (recall) |")
        lines.append("|---|" + "---|" * (len(ks) + 1))
        for m, r in cs["methods"].items():
            cells = [f"{r[k]['value']:.3f} [{r[k]['ci95'][0]:.3f}, {r[k]['ci95'][1]:.3f}]"
                     for k in ks]
            d = r["recall"]
            diff = (f"{d['diff']:+.3f} [{d['diff_ci95'][0]:+.3f}, {d['diff_ci95'][1]:+.3f}]"
                    if "diff" in d else "—")
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {diff} |")
        lines.append("")
    return "\n".join(lines)


def baselines_stage(workdir, predictor=None, ks: Sequence[int] = (1, 5),
                    n_boot: int = 1000, answers: int = 10, tree_dir=None,
                    examples_dir=None, retriever_dir=None) -> dict:
    """:func:`evaluate_baselines` on a work directory, for ``serendip evaluate`` and the
    promotion gate: level, δ, test fraction and seed from ``curation.json`` (the same split as
    the curated examples); the retriever baseline when ``retriever_dir`` (default
    ``<workdir>/retriever``; KFP passes the retriever artifact) holds a retriever; the
    model's candidate rankings from ``predictor`` (a loaded ``ClusterPredictor``: its top
    ``max(answers, max(ks))`` constrained answers per held-out context, non-candidates dropped
    — until the trie itself is restricted to the context's candidates, asking for more answers
    keeps a candidate in the list). ``tree_dir`` (clusters, item_clusters) and
    ``examples_dir`` (curation.json, curated_pairs) default to ``workdir``, as KFP passes them
    as separate artifacts. Adds ``markdown``.

    Raises:
        SerendipError: curation.json or a table is missing (names the stage to run).
        ConfigError: a curation.json lacking a setting (:func:`serendip.curation.read_curation`).
    """
    from pathlib import Path

    import pyarrow.parquet as pq

    from serendip.curation import read_curation
    from serendip.data.io import read_table

    wd = Path(workdir)
    tree, exd = Path(tree_dir or wd), Path(examples_dir or wd)
    cur = read_curation(exd)
    level, delta, test_fraction, seed = cur.level, cur.delta, cur.test_fraction, cur.seed
    items = read_table(wd, "items", columns=["item_id"])
    inter = read_table(wd, "interactions", refs={"items": items})
    ic, cl = read_table(tree, "item_clusters"), read_table(tree, "clusters")
    curated = pq.read_table(exd / "curated_pairs.parquet") \
        if (exd / "curated_pairs.parquet").exists() else None
    retriever = None
    rdir = Path(retriever_dir) if retriever_dir else wd / "retriever"
    if (rdir / "config.json").exists():
        from serendip.retriever import Retriever

        retriever = Retriever.load(rdir)
    model_rankings, model_stats = None, None
    if predictor is not None:
        from serendip.evaluation.rankings import mllm_cluster_rankings

        index = CandidateIndex.build(ic, cl, level, delta)
        _, held, held_ctx = split_transitions(inter, test_fraction, seed)
        cur_test = set(curated_cases(curated).context_ids) if curated is not None else set()
        ctx = sorted(held_ctx | cur_test)
        model_rankings, model_stats = mllm_cluster_rankings(wd, ctx, index, predictor,
                                                            max(answers, *ks),
                                                            use_scored=False,
                                                            tree_dir=tree)
    rep = evaluate_baselines(inter, ic, cl, level, delta, test_fraction, seed, retriever,
                             curated, model_rankings, ks, n_boot)
    rep["model"] = model_stats
    rep["markdown"] = baselines_markdown(rep)
    return rep
