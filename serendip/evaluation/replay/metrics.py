"""Metrics per arm, each with a 95% percentile bootstrap interval over held-out cases
(``n_bootstrap`` resamples, seeded; coverage and the pooled ratios are recomputed per
resample):

* ``hr@k``, ``ndcg@k`` — the held-out next item in the list (one relevant item);
* ``coverage`` — distinct recommended items / catalogue size (Recommenders
  ``catalog_coverage``);
* ``novelty`` — mean −log2(share of training users who interacted with the item)
  (Recommenders ``novelty``; items unseen in training get the maximum);
* ``diversity`` — intra-list diversity, 1 − mean pairwise cosine within a list (Recommenders
  ``diversity`` with the clustering embedding);
* ``serendipity`` — Recommenders ``user_serendipity``: per item (1 − mean cosine to the user's
  history) × relevance (1 if it is the held-out item), averaged over items, then cases;
  ``unexpectedness`` — the same without the relevance factor (Recommenders computes it on the
  way; it shows surprise apart from accuracy);
* ``cluster_serendipity`` — the paper's definition: share of listed items whose level-l
  cluster is a candidate of the context (different at l, same at l − δ);
* ``novel_impression_ratio`` — the paper's §4.2 ratio: share of an arm's impressions that none
  of the production arms (exploitation, exploration, bandit) recommended for the same request,
  the arm itself and, for a blend, the arms it is made of excluded (a blend would replace
  exploitation, so it is judged against the production arms it does not contain, as
  exploitation is); ``new_vs_exploitation`` — share that the exploitation arm did not show;
* ``hit_satisfaction`` — mean satisfaction (e.g. rating / 5) of the held-out transitions that
  were hits (where ratings exist; ``None`` without hits).

Every metric is also reported split by whether the true transition was serendipitous (its
next item's cluster is a candidate of the context) or not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serendip.candidates import CandidateIndex
from serendip.errors import SerendipError
from serendip.evaluation.replay.arms import COMPONENTS, PRODUCTION
from serendip.evaluation.replay.config import ReplayConfig
from serendip.evaluation.replay.split import ReplayCase

METRICS = ("hr", "ndcg", "coverage", "novelty", "diversity", "serendipity",
           "unexpectedness", "cluster_serendipity", "novel_impression_ratio", "new_vs_exploitation",
           "hit_satisfaction")


@dataclass
class ReplayResult:
    arms: dict[str, list[list[str]]]
    per_case: dict[str, dict[str, np.ndarray]]
    serendipitous: np.ndarray                  # bool [n_cases]: true transition serendipitous
    catalog_size: int
    summary: dict = field(default_factory=dict)


def _per_case(lists: list[list[str]], cases: Sequence[ReplayCase], k: int,
              emb_pos: Mapping[str, int], mat: np.ndarray, item_novelty: Mapping[str, float],
              nov_cap: float, index: CandidateIndex) -> dict[str, np.ndarray]:
    n = len(cases)
    hr, ndcg = np.zeros(n), np.zeros(n)
    nov, div, ser = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    unx = np.full(n, np.nan)
    for j, (r, c) in enumerate(zip(lists, cases)):
        r = r[:k]
        if c.target in r:
            hr[j] = 1.0
            ndcg[j] = 1.0 / math.log2(r.index(c.target) + 2)
        if not r:
            continue
        nov[j] = float(np.mean([item_novelty.get(i, nov_cap) for i in r]))
        rows = [emb_pos[i] for i in r if i in emb_pos]
        if len(rows) >= 2:
            v = mat[rows]
            s = v @ v.T
            div[j] = 1.0 - (s.sum() - np.trace(s)) / (len(rows) * (len(rows) - 1))
        hist = [emb_pos[i] for i in c.history if i in emb_pos]
        if hist and rows:
            unexpected = 1.0 - (mat[rows] @ mat[hist].T).mean(axis=1)
            rel = np.asarray([float(i == c.target) for i in r if i in emb_pos])
            ser[j] = float((unexpected * rel).mean())
            unx[j] = float(unexpected.mean())
    flat_ctx = [c.context for r, c in zip(lists, cases) for _ in r[:k]]
    flat_items = [i for r in lists for i in r[:k]]
    clus = index.is_candidate(flat_ctx, index.own_cluster(flat_items)) if flat_items \
        else np.zeros(0, bool)
    counts = np.asarray([len(r[:k]) for r in lists])
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    cs = np.asarray([clus[s:s + m].mean() if m else np.nan for s, m in zip(starts, counts)])
    sat = np.asarray([c.satisfaction for c in cases])
    return {"hr": hr, "ndcg": ndcg, "novelty": nov, "diversity": div, "serendipity": ser,
            "unexpectedness": unx, "cluster_serendipity": cs,
            "hit_satisfaction": np.where(hr > 0, sat, np.nan)}


def _novel_counts(arms: Mapping[str, list[list[str]]], k: int
                  ) -> dict[str, dict[str, np.ndarray]]:
    """Per arm and case: (#impressions, #novel vs production arms, #not in exploitation)."""
    out = {}
    names = list(arms)
    n = len(next(iter(arms.values()))) if names else 0
    for a in names:
        pool = [p for p in PRODUCTION if p in arms and p != a
                and p not in COMPONENTS.get(a, ())]
        tot, nov, newx = np.zeros(n), np.zeros(n), np.zeros(n)
        for j in range(n):
            mine = set(arms[a][j][:k])
            others = set().union(*(set(arms[p][j][:k]) for p in pool)) if pool else set()
            expl = set(arms["exploitation"][j][:k]) if "exploitation" in arms else set()
            tot[j], nov[j], newx[j] = len(mine), len(mine - others), len(mine - expl)
        out[a] = {"total": tot, "novel": nov, "new": newx}
    return out


def _interval(values: np.ndarray, idx: np.ndarray) -> tuple[float | None, list[float] | None]:
    """Mean of the finite values and the 95% percentile interval under resamples ``idx``."""
    ok = np.isfinite(values)
    if not ok.any():
        return None, None
    v = np.where(ok, values, 0.0)
    num = v[idx].sum(axis=1)
    den = ok[idx].sum(axis=1)
    boot = num[den > 0] / den[den > 0]
    return float(values[ok].mean()), [float(np.percentile(boot, 2.5)),
                                       float(np.percentile(boot, 97.5))]


def _ratio_interval(num: np.ndarray, den: np.ndarray, idx: np.ndarray
                    ) -> tuple[float | None, list[float] | None]:
    if den.sum() == 0:
        return None, None
    boot = num[idx].sum(axis=1) / np.maximum(den[idx].sum(axis=1), 1e-12)
    return float(num.sum() / den.sum()), [float(np.percentile(boot, 2.5)),
                                          float(np.percentile(boot, 97.5))]


def _coverage(lists: list[list[str]], k: int, catalog_size: int, idx: np.ndarray,
              sel: np.ndarray) -> tuple[float, list[float]]:
    codes: dict[str, int] = {}
    mat = np.full((len(lists), k), -1, np.int64)
    for j, r in enumerate(lists):
        for t, i in enumerate(r[:k]):
            mat[j, t] = codes.setdefault(i, len(codes))
    point = len(np.unique(mat[sel][mat[sel] >= 0])) / catalog_size
    boot = []
    for row in idx[: min(len(idx), 200)]:           # set metric: 200 resamples suffice
        m = mat[sel][row]
        boot.append(len(np.unique(m[m >= 0])) / catalog_size)
    # a resample repeats cases, which alone lowers coverage: shift by that bias
    shift = point - float(np.mean(boot))
    return point, [float(np.percentile(boot, 2.5)) + shift,
                   float(np.percentile(boot, 97.5)) + shift]


def summarise(result: ReplayResult, cfg: ReplayConfig) -> dict:
    """Mean and 95% interval of every metric per arm, overall and split by whether the true
    transition was serendipitous."""
    rng = np.random.default_rng(cfg.seed)
    novel = _novel_counts(result.arms, cfg.k)
    out: dict = {}
    n_all = len(result.serendipitous)
    for subset, sel in (("all", np.ones(n_all, bool)),
                        ("serendipitous_transition", result.serendipitous),
                        ("other_transition", ~result.serendipitous)):
        n = int(sel.sum())
        if n == 0:
            out[subset] = {"n_cases": 0, "arms": {}}
            continue
        idx = rng.integers(0, n, size=(cfg.n_bootstrap, n))
        arms_out = {}
        for arm, pc_ in result.per_case.items():
            row = {}
            for m in ("hr", "ndcg", "novelty", "diversity", "serendipity", "unexpectedness",
                      "cluster_serendipity", "hit_satisfaction"):
                v, ci = _interval(pc_[m][sel], idx)
                row[m] = {"value": v, "ci95": ci}
            v, ci = _coverage(result.arms[arm], cfg.k, result.catalog_size, idx, sel)
            row["coverage"] = {"value": v, "ci95": ci}
            nc = novel[arm]
            for name, key in (("novel_impression_ratio", "novel"),
                              ("new_vs_exploitation", "new")):
                v, ci = _ratio_interval(nc[key][sel], nc["total"][sel], idx)
                row[name] = {"value": v, "ci95": ci}
            row["empty_lists"] = int(sum(not r for r, s in zip(result.arms[arm], sel) if s))
            arms_out[arm] = row
        out[subset] = {"n_cases": n, "arms": arms_out}
    return out


def run_replay(cases: Sequence[ReplayCase], arms: Mapping[str, list[list[str]]],
               index: CandidateIndex, emb: Mapping[str, np.ndarray], train: pa.Table,
               catalog_size: int, cfg: ReplayConfig) -> ReplayResult:
    """Score precomputed arm lists (aligned with ``cases``) on every metric."""
    if not cases:
        raise SerendipError("no held-out cases to replay", field="interactions",
                            fix="replay logs where users have two or more transitions")
    ids = list(emb)
    emb_pos = {i: p for p, i in enumerate(ids)}
    mat = np.stack([np.asarray(emb[i], np.float32) for i in ids]) if ids else np.zeros((0, 1))
    mat = mat / (np.linalg.norm(mat, axis=1, keepdims=True) + 1e-12)
    pairs = train.select(["user_id", "next_item_id"]).to_pandas().drop_duplicates()
    n_users = max(len(pc.unique(train.column("user_id"))), 1)
    users_per_item = pairs.next_item_id.value_counts()
    item_novelty = {i: -math.log2(c / n_users) for i, c in users_per_item.items()}
    nov_cap = -math.log2(1.0 / n_users)
    per_case = {a: _per_case(lists, cases, cfg.k, emb_pos, mat, item_novelty, nov_cap, index)
                for a, lists in arms.items()}
    ser = index.is_candidate([c.context for c in cases],
                             index.own_cluster([c.target for c in cases]))
    res = ReplayResult(dict(arms), per_case, ser, catalog_size)
    res.summary = summarise(res, cfg)
    return res
