"""The replay's arms (each returns ``k`` items for a case; items the user has seen are never shown):

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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from serendip.blend import BlendConfig, blend_slate, slate_ids
from serendip.candidates import CandidateIndex
from serendip.evaluation.replay.config import ReplayConfig
from serendip.evaluation.replay.split import ReplayCase

PRODUCTION = ("exploitation", "exploration", "bandit")
COMPONENTS = {"blend": ("exploitation", "ours"), "blend_transition": ("exploitation", "transition")}


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
        a, b, s = index.transition_codes(train)
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
