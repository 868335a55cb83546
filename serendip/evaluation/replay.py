"""Replay evaluation on real logs (issue 15; paper §4): no ground truth needed.

Hold out each user's **last transition** (or every transition of the last ``holdout_days``
days), train every model on the rest, then replay each held-out context (the user, their
history up to the context item, the context item) through every arm and score the top-``k``
list against the next item the user actually chose.

Flow (``serendip evaluate --replay``):

1. ``--write-split DIR`` writes ``items`` and the **training** interactions to ``DIR``
   (:func:`write_replay_split`); run ``cluster``, ``curate``, ``finetune``, ``score`` and
   ``train-retriever`` on ``DIR`` as usual.
2. ``--workdir DIR --data RAW`` replays the held-out transitions of ``RAW`` through the models
   in ``DIR`` (:func:`replay_stage`). Held-out transitions found in ``DIR``'s interactions are
   counted and reported as ``heldout_in_training`` (a leak: then the figures flatter every
   model trained on them).

Arms (each returns ``k`` items for a case; items the user has seen are never shown):

* ``exploitation`` — the sequence retriever over the user's history, unrestricted;
* ``exploration`` — content neighbours: the items nearest to the context item by the
  clustering embedding (``embeddings.parquet``, cosine);
* ``bandit`` — Beta–Bernoulli Thompson sampling over the context's candidate clusters
  (:mod:`serendip.candidates`), one arm per (own cluster, candidate) pair, its posterior
  updated from the **training** transitions with fractional rewards (α += satisfaction,
  β += 1 − satisfaction per logged own → candidate transition), one posterior draw per case
  (seeded); then the retriever restricted to the drawn cluster. A replay cannot observe
  feedback on what the bandit shows, so it does not learn during the replay;
* ``transition`` — the transition-statistics cluster (:mod:`serendip.evaluation.baselines`)
  + the cluster-restricted retriever: the non-MLLM version of ours;
* ``ours`` — the MLLM's cluster (``item_serendipity.parquet`` from ``serendip score``, or the
  fine-tuned model), restricted to candidates (a non-candidate answer is skipped for the next
  ranked one and counted) + the cluster-restricted retriever;
* ``blend`` / ``blend_transition`` — the blended slate (:mod:`serendip.blend`): exploitation's
  top items with ``ceil(share · k)`` items from ours / the transition cluster.

Metrics per arm, each with a 95% percentile bootstrap interval over held-out cases
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

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serendip.blend import BlendConfig, blend_slate, slate_ids
from serendip.candidates import CandidateIndex
from serendip.errors import ConfigError, SerendipError
from serendip.evaluation.rankings import mllm_cluster_rankings

PRODUCTION = ("exploitation", "exploration", "bandit")
COMPONENTS = {"blend": ("exploitation", "ours"), "blend_transition": ("exploitation", "transition")}
METRICS = ("hr", "ndcg", "coverage", "novelty", "diversity", "serendipity",
           "unexpectedness", "cluster_serendipity", "novel_impression_ratio", "new_vs_exploitation",
           "hit_satisfaction")


@dataclass
class ReplayConfig:
    """Settings of a replay (see the module docstring)."""

    holdout_days: float | None = field(default=None, metadata={
        "help": "held-out period, in days before the last interaction; > 0 (null: each "
                "user's last transition)"})
    k: int = field(default=10, metadata={"help": "list length of HR@k and NDCG@k; >= 1"})
    level: int = field(default=3, metadata={
        "help": "l of the serendipitous definition (differ at level l); 1..4"})
    delta: int = field(default=1, metadata={
        "help": "δ of the serendipitous definition (share level l - δ); 1..level"})
    serendipitous_share: float = field(default=0.2, metadata={
        "help": "blended slate: ceil(share · k) items from the serendipitous cluster; in [0, 1]"})
    seed: int = field(default=0, metadata={"help": "seed of bandit draws and bootstrap resamples"})
    n_bootstrap: int = field(default=500, metadata={
        "help": "bootstrap resamples for the 95% intervals; >= 1"})
    mllm_k: int = field(default=10, metadata={
        "help": "MLLM answers asked per context (the first candidate cluster wins); >= 1"})

    def __post_init__(self) -> None:
        from serendip.candidates import check_level_delta

        if self.holdout_days is not None and not (
                isinstance(self.holdout_days, (int, float)) and self.holdout_days > 0
                and math.isfinite(self.holdout_days)):
            raise ConfigError(f"holdout_days={self.holdout_days!r}", field="holdout_days",
                              fix="use a positive number of days, or leave it unset for each "
                                  "user's last transition")
        for name in ("k", "n_bootstrap", "mllm_k"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r}", field=name,
                                  fix=f"use an integer {name} >= 1")
        check_level_delta(self.level, self.delta)
        BlendConfig(self.k, self.serendipitous_share)


# ------------------------------------------------------------------ split and cases
def holdout_mask(interactions: pa.Table, cfg: ReplayConfig) -> np.ndarray:
    """bool [rows]: the held-out transitions. Last transition: per user the row with the
    latest ``ts`` (ties: the later row), only for users with at least two transitions (so
    something remains to train on). Last N days: every row with ts > max(ts) − N days.

    Raises:
        SerendipError: nothing would be held out, or nothing would remain for training.
    """
    n = interactions.num_rows
    ts = interactions.column("ts").cast(pa.int64()).to_numpy() if n else np.zeros(0, np.int64)
    unit = interactions.schema.field("ts").type
    per_s = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}.get(
        getattr(unit, "unit", "s"), 1)
    if cfg.holdout_days is not None:
        mask = ts > ts.max() - cfg.holdout_days * 86400 * per_s if n else np.zeros(0, bool)
    else:
        users = interactions.column("user_id").to_numpy(zero_copy_only=False)
        order = np.lexsort((np.arange(n), ts, users))
        u = users[order]
        last = np.r_[u[1:] != u[:-1], True] if n else np.zeros(0, bool)
        first = np.r_[True, u[1:] != u[:-1]] if n else np.zeros(0, bool)
        mask = np.zeros(n, bool)
        mask[order[last & ~first]] = True
    if not mask.any():
        raise SerendipError("the replay split holds out no transition", field="holdout_days",
                            fix="use more days, or logs where users have two or more "
                                "transitions")
    if mask.all():
        raise SerendipError("the replay split leaves no transition to train on",
                            field="holdout_days", fix="hold out fewer days")
    return mask


def split_interactions(interactions: pa.Table, cfg: ReplayConfig) -> tuple[pa.Table, pa.Table]:
    """(training transitions, held-out transitions)."""
    mask = holdout_mask(interactions, cfg)
    m = pa.array(mask)
    return interactions.filter(pc.invert(m)), interactions.filter(m)


@dataclass
class ReplayCase:
    user_id: str
    history: list[str]         # the user's items before the context item, then the context
    context: str
    target: str                # the next item the user chose
    satisfaction: float


def replay_cases(interactions: pa.Table, mask: np.ndarray) -> list[ReplayCase]:
    """One case per held-out transition; the history is every item of the user's sequence
    (training and earlier held-out rows, in ts order) up to and including the context."""
    df = interactions.select(["user_id", "context_item_id", "next_item_id", "satisfaction",
                              "ts"]).to_pandas()
    df["held"] = mask
    df["row"] = np.arange(len(df))
    df = df.sort_values(["user_id", "ts", "row"], kind="stable")
    cases = []
    seq: list[str] = []
    prev_user = None
    for u, c, n, s, h in zip(df.user_id, df.context_item_id, df.next_item_id, df.satisfaction,
                             df.held):
        if u != prev_user:
            seq, prev_user = [], u
        if not seq or seq[-1] != c:
            seq.append(c)
        if h:
            cases.append(ReplayCase(str(u), list(seq), c, n, float(s)))
        seq.append(n)
    return cases


def write_replay_split(data_dir: str | Path, out_dir: str | Path, cfg: ReplayConfig) -> dict:
    """Write ``items`` and the training interactions to ``out_dir`` (step 1 of the flow)."""
    from serendip.data.io import read_table, write_table

    items = read_table(data_dir, "items")
    inter = read_table(data_dir, "interactions", refs={"items": items})
    train, held = split_interactions(inter, cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_table(out, "items", items)
    write_table(out, "interactions", train, refs={"items": items})
    return {"out": str(out), "train_transitions": train.num_rows,
            "heldout_transitions": held.num_rows,
            "holdout": "last transition per user" if cfg.holdout_days is None
            else f"last {cfg.holdout_days} days"}


# ------------------------------------------------------------------ arms
class ContentNeighbours:
    """Nearest items to the context item by cosine of ``emb`` rows (exact, numpy)."""

    def __init__(self, emb: Mapping[str, np.ndarray]):
        self.ids = list(emb)
        self.pos = {i: k for k, i in enumerate(self.ids)}
        m = np.stack([np.asarray(emb[i], np.float32) for i in self.ids])
        self.mat = m / (np.linalg.norm(m, axis=1, keepdims=True) + 1e-12)

    def __call__(self, cases: Sequence[ReplayCase], k: int, batch: int = 512) -> list[list[str]]:
        out: list[list[str]] = []
        for s in range(0, len(cases), batch):
            chunk = cases[s:s + batch]
            rows = [self.pos.get(c.context, -1) for c in chunk]
            sims = self.mat[np.maximum(rows, 0)] @ self.mat.T
            for c, r, sim in zip(chunk, rows, sims):
                if r < 0:
                    out.append([])
                    continue
                seen = [self.pos[i] for i in c.history if i in self.pos]
                sim[seen] = -np.inf
                sim[r] = -np.inf
                top = np.argpartition(-sim, min(k, len(sim) - 1))[: k + 1]
                top = top[np.lexsort((top, -sim[top]))]
                out.append([self.ids[j] for j in top if np.isfinite(sim[j])][:k])
        return out


class SiblingBandit:
    """Beta–Bernoulli Thompson sampling over candidate clusters, fitted on training logs (see
    the module docstring)."""

    def __init__(self, index: CandidateIndex, train: pa.Table, seed: int = 0):
        self.index = index
        n = len(index.cluster_ids)
        ctx = index._codes(train.column("context_item_id").to_pylist())
        nxt = index._codes(train.column("next_item_id").to_pylist())
        sat = train.column("satisfaction").to_numpy().astype(np.float64)
        ok = (ctx >= 0) & (nxt >= 0)
        a, b, s = index.own[ctx[ok]], index.own[nxt[ok]], sat[ok]
        self.n = n
        key = a * n + b
        self.keys, inv = np.unique(key, return_inverse=True)
        self.alpha = 1.0 + np.bincount(inv, weights=s, minlength=len(self.keys))
        self.beta = 1.0 + np.bincount(inv, weights=1.0 - s, minlength=len(self.keys))
        self.rng = np.random.default_rng(seed)
        self.code_of = {c: j for j, c in enumerate(index.cluster_ids)}

    def _params(self, own: int, arms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = own * self.n + arms
        if not len(self.keys):
            return np.ones(len(arms)), np.ones(len(arms))
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        hit = self.keys[pos] == q
        return np.where(hit, self.alpha[pos], 1.0), np.where(hit, self.beta[pos], 1.0)

    def choose(self, contexts: Sequence[str]) -> list[str | None]:
        out: list[str | None] = []
        for own in self.index.own_cluster(contexts):
            if own is None:
                out.append(None)
                continue
            code = self.code_of[own]
            arms = self.index.members[code]
            if not len(arms):
                out.append(None)
                continue
            a, b = self._params(code, arms)
            out.append(self.index.cluster_ids[int(arms[int(np.argmax(self.rng.beta(a, b)))])])
        return out


def retrieve_lists(retriever, cases: Sequence[ReplayCase], clusters: Sequence[str | None],
                   k: int, unrestricted: bool = False, batch: int = 512) -> list[list[str]]:
    """The retriever's top-k per case, restricted to ``clusters[i]`` (None: no list) or, with
    ``unrestricted``, over the whole catalogue."""
    out: list[list[str]] = []
    for s in range(0, len(cases), batch):
        chunk = cases[s:s + batch]
        cids = [None] * len(chunk) if unrestricted else list(clusters[s:s + batch])
        ask = [i for i, c in enumerate(cids) if unrestricted or c is not None]
        res = retriever.retrieve_batch([chunk[i].history for i in ask], [cids[i] for i in ask],
                                       k) if ask else []
        got = dict(zip(ask, res))
        out.extend([[i for i, _ in got[j]] if j in got else [] for j in range(len(chunk))])
    return out


# ------------------------------------------------------------------ metrics
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


def build_arms(cases: Sequence[ReplayCase], retriever, index: CandidateIndex,
               emb: Mapping[str, np.ndarray], train: pa.Table, cfg: ReplayConfig,
               mllm_rankings: Mapping[str, Sequence[str]] | None = None,
               progress: Callable[[str], None] | None = None) -> dict[str, list[list[str]]]:
    """Every arm's top-k list per case (see the module docstring)."""
    from serendip.evaluation.baselines import transition_rankings

    say = progress or (lambda _m: None)
    k = cfg.k
    arms: dict[str, list[list[str]]] = {}
    say("exploitation")
    arms["exploitation"] = retrieve_lists(retriever, cases, [None] * len(cases), k,
                                          unrestricted=True)
    say("exploration")
    arms["exploration"] = ContentNeighbours(emb)(cases, k)
    say("bandit")
    bandit = SiblingBandit(index, train, cfg.seed)
    arms["bandit"] = retrieve_lists(retriever, cases, bandit.choose([c.context for c in cases]),
                                    k)
    say("transition")
    trans = transition_rankings(train, index, sorted({c.context for c in cases}))
    tcl = [(trans.get(c.context) or [None])[0] for c in cases]
    arms["transition"] = retrieve_lists(retriever, cases, tcl, k)
    blend_cfg = BlendConfig(k, cfg.serendipitous_share)
    if mllm_rankings is not None:
        say("ours")
        ocl = [(list(mllm_rankings.get(c.context) or []) or [None])[0] for c in cases]
        arms["ours"] = retrieve_lists(retriever, cases, ocl, k)
        arms["blend"] = [slate_ids(blend_slate(e, s, blend_cfg))
                         for e, s in zip(arms["exploitation"], arms["ours"])]
    arms["blend_transition"] = [slate_ids(blend_slate(e, s, blend_cfg))
                                for e, s in zip(arms["exploitation"], arms["transition"])]
    return arms


def replay_markdown(summary: dict, cfg: ReplayConfig | None = None) -> str:
    """The replay summary as markdown: one table per subset, value [95% interval]."""
    from serendip.report import markdown_table

    k = cfg.k if cfg else 10
    names = {"hr": f"HR@{k}", "ndcg": f"NDCG@{k}", "coverage": "coverage",
             "novelty": "novelty", "diversity": "ILD", "serendipity": "serendipity",
             "unexpectedness": "unexpect.",
             "cluster_serendipity": "cluster ser.", "novel_impression_ratio": "NIR",
             "new_vs_exploitation": "new vs expl.", "hit_satisfaction": "hit sat."}
    parts = []
    for subset in ("all", "serendipitous_transition", "other_transition"):
        block = summary["subsets"][subset]
        parts.append(f"**{subset.replace('_', ' ')}** ({block['n_cases']} held-out cases)\n")
        rows = []
        for arm, m in block["arms"].items():
            row = {"arm": arm}
            for key, label in names.items():
                v = m[key]
                row[label] = "—" if v["value"] is None else (
                    f"{v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]")
            rows.append(row)
        parts.append(markdown_table(rows, ["arm", *names.values()]) + "\n")
    return "\n".join(parts)


def heldout_leak(workdir_interactions: pa.Table | None, heldout: pa.Table) -> int:
    """How many held-out transitions appear in the interactions the models were trained on
    (same user, items and time: the same transition repeated at another time is not a leak)."""
    if workdir_interactions is None or heldout.num_rows == 0:
        return 0
    cols = ["user_id", "context_item_id", "next_item_id", "ts"]

    def keys(t: pa.Table) -> set[tuple]:
        d = t.select(cols).to_pydict()
        return set(zip(*(d[c] for c in cols)))

    return len(keys(heldout) & keys(workdir_interactions))


def replay_stage(workdir: str | Path, data_dir: str | Path | None = None,
                 cfg: ReplayConfig | None = None, predictor=None,
                 out_dir: str | Path | None = None, *, progress: bool = True) -> dict:
    """Replay the held-out transitions of ``data_dir`` (default: ``workdir``) through the
    models of ``workdir`` (retriever/, embeddings, clusters, and the MLLM: ``predictor``, a
    loaded ``ClusterPredictor``, if given, else item_serendipity.parquet); write
    ``replay.json`` and ``replay.md`` to ``out_dir`` (default ``<workdir>/evaluation``).
    Returns the summary. ``progress``: a progress bar over the arms (a run-time flag).

    Raises:
        SerendipError: a missing model or table (names the stage to run), no held-out cases.
    """
    from serendip.data.io import atomic_write_bytes, read_table
    from serendip.evaluation.recommenders import load_embeddings
    from serendip.retriever import Retriever

    cfg = cfg or ReplayConfig()
    t0 = time.perf_counter()
    wd = Path(workdir)
    data = Path(data_dir or wd)
    if not (wd / "retriever" / "config.json").exists():
        raise SerendipError(f"{wd / 'retriever'} is missing", field="--workdir",
                            fix=f"run `serendip train-retriever --workdir {wd}` first")
    items = read_table(data, "items", columns=["item_id"])
    full = read_table(data, "interactions", refs={"items": items})
    mask = holdout_mask(full, cfg)
    train = full.filter(pa.array(~mask))
    held = full.filter(pa.array(mask))
    trained_on = read_table(wd, "interactions") if data != wd else full
    leak = heldout_leak(trained_on, held)
    clusters = read_table(wd, "clusters")
    item_clusters = read_table(wd, "item_clusters")
    index = CandidateIndex.build(item_clusters, clusters, cfg.level, cfg.delta)
    emb = load_embeddings(wd)
    retriever = Retriever.load(wd / "retriever")
    cases = replay_cases(full, mask)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        from serendip.data.io import has_table

        bar = tqdm(total=4 + (predictor is not None or has_table(wd, "item_serendipity")),
                   desc="replay arms", unit="arm")

    def say(name: str) -> None:
        if bar is not None:
            bar.set_postfix_str(name)
            bar.update(1)

    mllm, mllm_stats = None, None
    from serendip.data.io import has_table

    if has_table(wd, "item_serendipity") or predictor is not None:
        mllm, mllm_stats = mllm_cluster_rankings(wd, [c.context for c in cases], index,
                                                 predictor, cfg.mllm_k,
                                                 use_scored=predictor is None)
    arms = build_arms(cases, retriever, index, emb, train, cfg, mllm, say)
    res = run_replay(cases, arms, index, emb, train, items.num_rows, cfg)
    if bar is not None:
        bar.close()
    from serendip.config import to_dict

    summary = {"config": to_dict(cfg), "workdir": str(wd), "data": str(data),
               "n_cases": len(cases), "train_transitions": train.num_rows,
               "heldout_in_training": leak, "mllm": mllm_stats,
               "arms": list(arms), "subsets": res.summary,
               "seconds": round(time.perf_counter() - t0, 1)}
    out = Path(out_dir) if out_dir else wd / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "replay.json", json.dumps(summary, indent=2).encode())
    md = replay_markdown(summary, cfg)
    atomic_write_bytes(out / "replay.md", (md + "\n").encode())
    summary["markdown"] = md
    return summary
