"""Is there anything left for a content model to learn? The "headroom" of issue 15's target.

Issue 15 asks the fine-tuned MLLM — whose input is the context item's **content** (on ml-100k
the title and its level-l cluster's description; on the synthetic platform its frames) — to
beat the best cluster-choice baseline, the transition statistics
(:func:`serendip.evaluation.baselines.transition_rankings`), on all serendipitous pairs of
held-out context items. A model can only beat it with information the transition statistics
do not use. This benchmark measures, without any model, how much recall each kind of
information adds on the very same cases, so a model's result can be read against what the
data allow.

Every method ranks the context's candidates (its level-l siblings under the level-(l − δ)
ancestor, paper §2) from the **training transitions only** (context items split by
:func:`~serendip.evaluation.baselines.split_transitions`, the curation stage's hash split):

* ``random_sibling`` and ``transition``: the baselines, unchanged.
* ``level4_flows``: the satisfaction-weighted next-cluster flows out of the context's **finer**
  cluster (level l + 1) instead of its level-l cluster.
* ``knn_<block>``: the context's ``k`` nearest training context items (cosine) in one
  **content** block of the clustering embedding (text, image, colour, texture — each block that
  exists — and ``knn_content``: every content block together), their per-item next-cluster
  flows (each normalised to sum 1) weighted by similarity. Content blocks are computed from the
  catalogue alone: no log enters them.
* ``knn_behaviour``: the same in the behaviour block — fitted on **all** interactions, the
  held-out transitions included (not leak-free).
* ``inflow``: the level-l clusters of the items users came **from** to the context item
  (training transitions ``a → context``). In a split by context item the user of a held-out
  case ``context → b`` nearly always also made a training transition ``a → context`` (their
  previous item: user history, which a per-item model does not see), so ``inflow`` mixes the
  item's audience with the case's own user. Two leak-free versions:
  ``inflow_other_users`` leaves out only the case's own user (leave-one-user-out, per case),
  ``inflow_excl_heldout_users`` every user with a held-out case from the context (which, as the
  JSON's ``inflow_excl_transitions`` shows, leaves almost no data).

Each signal ``v`` (a vector over level-l clusters) is blended with the transition statistics,
``score = v / Σv + β · t / Σt`` (``t``: the transition flows out of the context's level-l
cluster; β = 1, fixed beforehand, never tuned on held-out cases), and ties fall back to the
transition order — so β → ∞ is exactly ``transition`` (checked: ``transition_reproduced``).
A content model sees the cluster too, so "transition plus the signal" is what it could reach.

Metrics: satisfaction-weighted recall (top-1, and top-3 in the JSON) with 95% bootstrap
intervals over context items, and the paired difference to ``transition`` under the same
resamples (:func:`~serendip.evaluation.baselines.choice_metrics`); the same for each signal
alone (β = 0, ties in transition order). The **content headroom** of a data set is the best
content-only method (blend or alone) minus ``transition`` — the best of several chosen on the
same cases: an optimistic figure. On ml-100k the MLLM's input beyond the title, the level-l
cluster's description, is a function of the cluster the transition statistics already use.

Data as ``bench_curation_size`` (whose ``prepare_base`` and ``curate_top_k`` this reuses):
ml-100k (``SERENDIP_ML100K``, default ``/work/shared/data/ml-100k``; tree ``auto``) and the
synthetic platform (600 items, 2/2/3/2 tree), l = 3, δ = 2, split seed 0, test fraction 0.2.

Writes ``benchmarks/results/headroom.json``, ``headroom.md`` and ``headroom.png``.
Run: ``OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python -m benchmarks.bench_headroom``
(``--data ml100k,synth``, ``--k 10``, ``--beta 1``; ``--quick``: the committed ml-100k subset,
results in ``headroom_quick.*``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_world_knowledge import RESULTS

K_NN = 10
BETA = 1.0
N_BOOT = 1000
KS = (1, 3)

# method -> (information it uses, leak-free?, why not)
INFO = {
    "random_sibling": ("none (the tree)", True, ""),
    "transition": ("cluster: own level-l cluster", True, ""),
    "level4_flows": ("cluster: own level-(l+1) cluster", True, ""),
    "knn_text": ("content: text block", True, ""),
    "knn_image": ("content: image block", True, ""),
    "knn_shape": ("content: shape block", True, ""),
    "knn_colour": ("content: colour block", True, ""),
    "knn_texture": ("content: texture block", True, ""),
    "knn_layout": ("content: layout block", True, ""),
    "knn_content": ("content: every content block", True, ""),
    "knn_behaviour": ("collaborative: behaviour block", False,
                      "fitted on all interactions, held-out transitions included"),
    "inflow": ("collaborative: clusters users came from", False,
               "includes the held-out cases' own users' previous items (user history)"),
    "inflow_excl_heldout_users": ("collaborative: clusters users came from", True, ""),
    "inflow_other_users": ("collaborative: clusters other users came from", True, ""),
}


# ------------------------------------------------------------------ data
def prepare(data: str, quick: bool, root: Path) -> tuple[Path, dict]:
    """Import/generate, cluster and curate (top_k 10) into ``root/top10`` as
    bench_curation_size; returns the work dir and what was built."""
    from benchmarks.bench_curation_size import curate_top_k, prepare_base

    t0 = time.perf_counter()
    info = prepare_base(root / "base", quick, data)
    cur = curate_top_k(root / "base", root / "top10", 10, data)
    cur.pop("_train_ctx", None)
    info.update(curation=cur, prepare_wall_s=round(time.perf_counter() - t0, 1))
    return root / "top10", info


def block_slices(wd: Path) -> dict[str, slice]:
    """Columns of each block in ``embeddings.parquet``: the blocks in use (weight > 0, columns)
    concatenated in ``BLOCKS`` order (:func:`serendip.embeddings.combine.combine_blocks`)."""
    from serendip.embeddings.config import BLOCKS

    meta = json.loads((wd / "embedder" / "embedder.json").read_text())
    out, at = {}, 0
    for b in BLOCKS:
        dim = int(meta["blocks"].get(b, 0))
        if dim > 0 and float(meta["config"].get(f"w_{b}", 0.0)) > 0:
            out[b] = slice(at, at + dim)
            at += dim
    return out


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _norm_rows(m: np.ndarray) -> np.ndarray:
    s = m.sum(axis=1, keepdims=True)
    return np.where(s > 0, m / np.where(s > 0, s, 1.0), 0.0)


def _flows(rows: np.ndarray, cols: np.ndarray, w: np.ndarray, n_rows: int, n_cols: int
           ) -> np.ndarray:
    """Dense ``n_rows × n_cols`` sum of ``w`` at (rows, cols)."""
    return np.bincount(rows * n_cols + cols, weights=w,
                       minlength=n_rows * n_cols).reshape(n_rows, n_cols)


# ------------------------------------------------------------------ the measurement
def headroom(wd: Path, k_nn: int = K_NN, beta: float = BETA, n_boot: int = N_BOOT) -> dict:
    """Every method of the module docstring on all serendipitous pairs of held-out context
    items of the curated work dir ``wd``.

    Returns ``{"n_cases", "n_contexts", "methods": {name: {"recall": {value, ci95, diff,
    diff_ci95, lift}, "recall_at_3": ..., "alone": recall of the signal alone (β = 0),
    "information", "leak_free", "leak"}}, "headroom": {...}, "transition_reproduced"}``.
    """
    import pyarrow.parquet as pq

    from serendip.candidates import CandidateIndex
    from serendip.curation import read_curation
    from serendip.data.io import read_table
    from serendip.evaluation.baselines import (
        choice_metrics,
        heldout_cases,
        random_sibling_hits,
        ranking_hits,
        split_transitions,
        transition_rankings,
    )

    cur = read_curation(wd)
    level, delta = cur.level, cur.delta
    items = read_table(wd, "items", columns=["item_id"])
    inter = read_table(wd, "interactions", refs={"items": items})
    ic, cl = read_table(wd, "item_clusters"), read_table(wd, "clusters")
    index = CandidateIndex.build(ic, cl, level, delta)
    train, held, held_ctx = split_transitions(inter, cur.test_fraction, cur.seed)
    cases = heldout_cases(held, ic, index)
    ctxs = sorted(set(cases.context_ids))
    n, n_items = len(index.cluster_ids), len(index.item_ids)
    own = index.own
    hrow = index._codes(ctxs)                                 # held-out context rows
    hown = own[hrow]

    # training transitions (both ends clustered)
    cr = index._codes(train.column("context_item_id").to_pylist())
    nr = index._codes(train.column("next_item_id").to_pylist())
    ok = (cr >= 0) & (nr >= 0)
    users = np.asarray(train.column("user_id").to_pylist(), dtype=object)[ok]
    cr, nr = cr[ok], nr[ok]
    sat = train.column("satisfaction").to_numpy().astype(np.float64)[ok]

    item_flow = _flows(cr, own[nr], sat, n_items, n)          # context item -> next cluster
    cflow = _flows(own[cr], own[nr], sat, n, n)               # the transition statistics
    into = cflow.sum(axis=0)
    t_held = _norm_rows(cflow[hown])

    # rankings: primary the blended score, then the transition order (flow, inflow, id)
    def rank(v: np.ndarray | None, b: float) -> dict[str, list[str]]:
        score = t_held * b if v is None else _norm_rows(v) + b * t_held
        out = {}
        for i, c in enumerate(ctxs):
            m = index.members[hown[i]]
            order = np.lexsort((m, -into[m], -cflow[hown[i], m], -score[i, m]))
            out[c] = [index.cluster_ids[j] for j in m[order]]
        return out

    def hits_of(rankings):
        return {k: ranking_hits(rankings, cases, k) for k in KS}

    trans = transition_rankings(train, index, ctxs)
    hits = {"random_sibling": {k: random_sibling_hits(cases, index, k) for k in KS},
            "transition": hits_of(trans)}
    reproduced = rank(None, 1.0) == trans
    signals: dict[str, np.ndarray] = {}

    # finer cluster
    finer = f"c{level + 1}"
    if finer in ic.column_names:
        fids = ic.column(finer).to_pylist()
        fcode_of = {c: j for j, c in enumerate(sorted(set(fids)))}
        fcode = np.asarray([fcode_of[c] for c in fids], dtype=np.int64)   # rows = item rows
        fflow = _flows(fcode[cr], own[nr], sat, len(fcode_of), n)
        signals["level4_flows"] = fflow[fcode[hrow]]

    # kNN over training context items in each block of the clustering embedding
    emb = pq.read_table(wd / "embeddings.parquet")
    erow = index._codes(emb.column("item_id").to_pylist())
    X = np.zeros((n_items, len(emb.column("embedding")[0])), dtype=np.float64)
    keep = erow >= 0
    X[erow[keep]] = np.asarray(emb.column("embedding").to_pylist(), dtype=np.float64)[keep]
    slices = block_slices(wd)
    if max((s.stop for s in slices.values()), default=0) != X.shape[1]:
        raise SystemExit(f"embedder.json blocks {slices} do not cover the embedding "
                         f"({X.shape[1]} columns)")
    from serendip.embeddings.config import CONTENT_BLOCKS

    content = [b for b in CONTENT_BLOCKS if b in slices]
    views = {b: [slices[b]] for b in content}
    if len(content) > 1:
        views["content"] = [slices[b] for b in content]
    if "behaviour" in slices:
        views["behaviour"] = [slices["behaviour"]]
    trn = np.flatnonzero(item_flow.sum(axis=1) > 0)           # training context items
    trn_flow = _norm_rows(item_flow[trn])
    for name, parts in views.items():
        V = _unit_rows(np.concatenate([X[:, s] for s in parts], axis=1))
        sim = V[hrow] @ V[trn].T                              # [held, train]
        kk = min(k_nn, sim.shape[1])
        nn = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
        w = np.maximum(np.take_along_axis(sim, nn, axis=1), 0.0)
        signals[f"knn_{name}"] = np.einsum("hk,hkn->hn", w, trn_flow[nn])

    # in-flow: clusters of the items users came from to the context item
    inflow = _flows(nr, own[cr], sat, n_items, n)
    signals["inflow"] = inflow[hrow]
    hu = held.column("user_id").to_pylist()
    hc = held.column("context_item_id").to_pylist()
    held_pairs = {f"{u}\x00{c}" for u, c in zip(hu, hc)}
    nids = np.asarray(index.item_ids, dtype=object)[nr]
    mine = np.asarray([f"{u}\x00{c}" in held_pairs for u, c in zip(users, nids)], dtype=bool)
    into_held = np.isin(nids, list(held_ctx))
    inflow_x = _flows(nr[~mine], own[cr[~mine]], sat[~mine], n_items, n)
    signals["inflow_excl_heldout_users"] = inflow_x[hrow]

    # the same per case, leaving out only the case's own user (leave-one-user-out)
    hn = held.column("next_item_id").to_pylist()
    is_case = index.is_candidate(hc, index.own_cluster(hn))
    case_users = [u for u, k in zip(hu, is_case) if k]
    pos_of = {c: i for i, c in enumerate(ctxs)}
    cpos = np.asarray([pos_of[c] for c in cases.context_ids], dtype=np.int64)
    own_in: dict[tuple[str, str], np.ndarray] = {}
    for j in np.flatnonzero(mine):
        own_in.setdefault((users[j], nids[j]), np.zeros(n))[own[cr[j]]] += sat[j]
    zero = np.zeros(n)
    case_signals = {"inflow_other_users": inflow[hrow[cpos]] - np.stack(
        [own_in.get((u, c), zero) for u, c in zip(case_users, cases.context_ids)])}
    code_of = {c: j for j, c in enumerate(index.cluster_ids)}
    lab = np.asarray([code_of[c] for c in cases.labels], dtype=np.int64)

    def case_hits(v: np.ndarray, b: float) -> dict[int, np.ndarray]:
        score = _norm_rows(np.maximum(v, 0.0)) + b * t_held[cpos]
        out = {k: np.zeros(len(cases)) for k in KS}
        for i, p in enumerate(cpos):
            m = index.members[hown[p]]
            top = m[np.lexsort((m, -into[m], -cflow[hown[p], m], -score[i, m]))]
            for k in KS:
                out[k][i] = float(lab[i] in top[:k])
        return out

    for name, v in signals.items():
        hits[name] = hits_of(rank(v, beta))
        hits[f"{name} alone"] = {1: ranking_hits(rank(v, 0.0), cases, 1)}
    for name, v in case_signals.items():
        hits[name] = case_hits(v, beta)
        hits[f"{name} alone"] = {1: case_hits(v, 0.0)[1]}
        signals[name] = v
    res = choice_metrics(hits, cases, reference="transition", n_boot=n_boot, seed=0)
    for name in signals:
        res["methods"][name]["alone"] = res["methods"].pop(f"{name} alone")["recall"]
    for name, r in res["methods"].items():
        info, free, leak = INFO.get(name, (name, True, ""))
        r.update(information=info, leak_free=free, leak=leak)
    res.update(level=level, delta=delta, k_nn=k_nn, beta=beta, n_boot=n_boot,
               blocks={b: s.stop - s.start for b, s in slices.items()},
               transition_reproduced=bool(reproduced),
               own_users_share_of_inflow=round(float(sat[mine].sum() / max(
                   sat[into_held].sum(), 1e-12)), 4),
               inflow_transitions=int(into_held.sum()),
               inflow_excl_transitions=int((into_held & ~mine).sum()),
               headroom=_headroom(res["methods"]))
    return res


def _headroom(methods: dict) -> dict:
    """Best content-only and best leak-free method (blend or signal alone, whichever is
    higher: chosen on the same cases, so an optimistic figure) against transition."""
    def best(names):
        opts = [(m, v) for m in names if m in methods for v in ("recall", "alone")
                if v in methods[m]]
        if not opts:
            return None
        m, v = max(opts, key=lambda x: methods[x[0]][x[1]]["value"])
        r = methods[m][v]
        return {"method": m + (" (signal alone, β=0)" if v == "alone" else ""),
                "recall": r["value"], "diff": r["diff"], "diff_ci95": r["diff_ci95"]}

    content = [m for m in methods if INFO.get(m, ("",))[0].startswith("content")]
    free = [m for m in methods if m not in ("transition", "random_sibling")
            and INFO.get(m, ("", False))[1]]
    return {"content": best(content), "leak_free": best(free)}


# ------------------------------------------------------------------ report
def markdown(res: dict) -> str:
    lines = []
    for data, r in res["data"].items():
        t = r["methods"]["transition"]["recall"]
        lines += [f"### {data}: {r['n_cases']} cases, {r['n_contexts']} held-out contexts "
                  f"(l={r['level']}, δ={r['delta']}, k={r['k_nn']}, β={r['beta']})", "",
                  "| method | recall [95% CI] | − transition [95% CI] | signal alone (β=0): recall, "
                  "− transition [95% CI] | "
                  "information | leak-free |", "|---|---|---|---|---|---|"]
        for m, x in r["methods"].items():
            v = x["recall"]
            d = (f"{v['diff']:+.3f} [{v['diff_ci95'][0]:+.3f}, {v['diff_ci95'][1]:+.3f}]"
                 if "diff" in v else "—")
            a = x.get("alone")
            a = (f"{a['value']:.3f}, {a['diff']:+.3f} [{a['diff_ci95'][0]:+.3f}, "
                 f"{a['diff_ci95'][1]:+.3f}]" if a else "—")
            lk = "yes" if x["leak_free"] else f"no: {x['leak']}"
            lines.append(f"| {m} | {v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}] "
                         f"| {d} | {a} | {x['information']} | {lk} |")
        h = r["headroom"]
        lines.append("")
        for key, label in (("content", "Content headroom (best content-only − transition)"),
                           ("leak_free", "Best leak-free signal − transition")):
            if h.get(key):
                lo, hi = h[key]["diff_ci95"]
                lines.append(f"{label}: **{h[key]['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]** "
                             f"({h[key]['method']}, recall {h[key]['recall']:.3f}).  ")
        lines += [f"Transition {t['value']:.3f}; blend reproduces transition at β→∞: "
                  f"{r['transition_reproduced']}. `inflow` rests on {r['inflow_transitions']} "
                  "training transitions into held-out contexts; "
                  f"{100 * r['own_users_share_of_inflow']:.1f}% of their satisfaction is from "
                  "users of the context's own held-out cases (their previous item: user "
                  "history, not a property of the item), so `inflow_excl_heldout_users` keeps "
                  f"only {r['inflow_excl_transitions']}; `inflow_other_users` leaves out only the "
                  "case's own user.", ""]
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(res["data"]), figsize=(6 * len(res["data"]), 4.5),
                             squeeze=False)
    for ax, (data, r) in zip(axes[0], res["data"].items()):
        ms = [m for m in r["methods"] if "diff" in r["methods"][m]["recall"]]
        d = np.asarray([r["methods"][m]["recall"]["diff"] for m in ms])
        ci = np.asarray([r["methods"][m]["recall"]["diff_ci95"] for m in ms])
        col = ["tab:green" if INFO.get(m, ("", True))[0].startswith("content") else
               "tab:blue" if r["methods"][m]["leak_free"] else "tab:red" for m in ms]
        y = np.arange(len(ms))
        ax.errorbar(d, y, xerr=[d - ci[:, 0], ci[:, 1] - d], fmt="none", ecolor="grey")
        ax.scatter(d, y, c=col, zorder=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, ms)
        ax.invert_yaxis()
        ax.set_xlabel(f"recall − transition (95% CI), signal + {r['beta']:g}·transition")
        ax.set_title(f"{data}: green content, blue leak-free, red leaks")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(quick: bool = False, datasets=("ml100k", "synth"), k_nn: int = K_NN,
        beta: float = BETA) -> dict:
    """Every data set (``quick``: the committed ml-100k subset only)."""
    res: dict = {"data": {}, "prepared": {}}
    for data in (("ml100k",) if quick else datasets):
        root = Path(tempfile.mkdtemp(prefix=f"bench-headroom-{data}-"))
        try:
            wd, info = prepare(data, quick, root)
            t0 = time.perf_counter()
            res["data"][data] = headroom(wd, k_nn, beta)
            info["measure_wall_s"] = round(time.perf_counter() - t0, 1)
            res["prepared"][data] = info
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(f"[{time.strftime('%H:%M:%S')}] {data} done", flush=True)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="ml100k,synth", help="comma-separated: ml100k, synth")
    ap.add_argument("--k", type=int, default=K_NN, help="neighbours of the kNN methods (>= 1)")
    ap.add_argument("--beta", type=float, default=BETA,
                    help="weight of the transition statistics in every blend (>= 0)")
    ap.add_argument("--quick", action="store_true", help="the committed ml-100k subset")
    a = ap.parse_args(argv)
    datasets = tuple(x for x in a.data.split(",") if x)
    if not datasets or set(datasets) - {"ml100k", "synth"}:
        ap.error("--data: comma-separated ml100k and/or synth, e.g. ml100k,synth")
    if a.k < 1:
        ap.error("--k: an integer >= 1, e.g. 10")
    if not a.beta >= 0:
        ap.error("--beta: a number >= 0, e.g. 1")
    res = run(a.quick, datasets, a.k, a.beta)
    from serendip.data.io import atomic_write_bytes

    name = "headroom" + ("_quick" if a.quick else "")
    RESULTS.mkdir(exist_ok=True)
    atomic_write_bytes(RESULTS / f"{name}.json", json.dumps(res, indent=2).encode())
    atomic_write_bytes(RESULTS / f"{name}.md", markdown(res).encode())
    if not a.quick:
        plot(res, RESULTS / f"{name}.png")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
