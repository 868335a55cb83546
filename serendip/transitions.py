"""Transition statistics between level-``l`` clusters, and the prior they give the MLLM.

**Transition statistics** (the baseline a platform team tries first, issue 15): for a context
item's own level-``l`` cluster ``a`` and a candidate cluster ``b``, the **flow**
``F[a, b] = Σ satisfaction`` over logged (context → next) transitions from an item of ``a`` to
an item of ``b``, from the **training** logs only (held-out context items excluded, the
curation stage's hash split). :meth:`TransitionPrior.ranking` ranks a context's candidates by
it (ties: more satisfaction flowing into ``b`` overall, then cluster id).

**Transition prior** (logit adjustment): the paper's diversified curation (§4.1) keeps the same
number of examples (top 10) for every next-item cluster, so the fine-tuned MLLM learns a
*uniform* prior over target clusters — the logged distribution of where users go next is
removed on purpose, to make every cluster learnable. The label-shift correction of a
classifier trained on balanced classes (Saerens et al., 2002; post-hoc *logit adjustment*,
Menon et al., ICLR 2021) puts it back at scoring time::

    score(b | x) = log p_model(description(b) | x) + τ · log π(b | a)

with ``π(b | a) = (F[a, b] + β · q(b)) / (Σ_{b'} F[a, b'] + β)`` over the scored candidates,
``q(b)`` = b's share of all satisfaction flowing into the candidates (the Dirichlet smoothing
for a cluster with few logged transitions), ``β`` = :data:`SMOOTHING` satisfaction units and
``τ`` = ``FinetuneConfig.prior_weight`` (0: the model alone; 1: Bayes' rule with the balanced
training prior divided out). The MLLM contributes what the *item* says beyond its cluster;
the prior contributes where users of the cluster go.

The prior travels with the model (``serendip.json`` → ``transition_prior``), so evaluation,
batch scoring and both serving backends apply exactly the same scores.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from serendip.errors import ConfigError

PRIOR_FILE = "transition_prior.json"   # written by curation beside curation.json
SMOOTHING = 1.0       # β: pseudo-count of the smoothing prior, in satisfaction units
FORMAT = 1


@dataclass
class TransitionPrior:
    """Satisfaction-weighted flows between level-``level`` clusters (training logs only).

    ``flows[a][b]``: Σ satisfaction of logged transitions from cluster ``a`` to cluster ``b``
    (only ``b`` among ``a``'s candidates is kept when built with a candidate index);
    ``into[b]``: Σ satisfaction flowing into ``b`` from any cluster. Units: satisfaction
    (each transition's satisfaction in [0, 1]); every value >= 0.
    """

    level: int
    flows: dict[str, dict[str, float]] = field(default_factory=dict)
    into: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, transitions: pa.Table, index) -> TransitionPrior:
        """From logged transitions (``context_item_id``, ``next_item_id``, ``satisfaction``)
        and a :class:`serendip.candidates.CandidateIndex`: flows between the items' level-l
        clusters, kept for candidates only (the serendipitous transitions). Transitions of
        items without clusters are ignored. Pass the **training** transitions only
        (:func:`serendip.evaluation.baselines.split_transitions`)."""
        n = len(index.cluster_ids)
        a, b, s = index.transition_codes(transitions)
        into = np.bincount(b, weights=s, minlength=n)
        keys, inv = np.unique(a * n + b, return_inverse=True)
        flow = np.bincount(inv, weights=s, minlength=len(keys))
        src, dst = keys // n, keys % n
        keep = index.is_candidate_code(src, dst) & (flow > 0)
        flows: dict[str, dict[str, float]] = {}
        for i, j, f in zip(src[keep].tolist(), dst[keep].tolist(), flow[keep].tolist()):
            flows.setdefault(index.cluster_ids[i], {})[index.cluster_ids[j]] = f
        return cls(index.level, flows,
                   {c: float(v) for c, v in zip(index.cluster_ids, into) if v > 0})

    # ------------------------------------------------------------------ queries
    def ranking(self, own: str, candidates: Sequence[str]) -> list[str]:
        """``candidates`` of a context in cluster ``own``, by flow from ``own`` (ties: more
        satisfaction flowing in overall, then cluster id) — the transition baseline."""
        f = self.flows.get(own, {})
        return sorted(candidates, key=lambda c: (-f.get(c, 0.0), -self.into.get(c, 0.0), c))

    def log_prior(self, own: str | None, candidates: Sequence[str],
                  smoothing: float = SMOOTHING) -> np.ndarray:
        """float64 [len(candidates)]: ``log π(b | own)`` over ``candidates`` (see the module
        docstring; sums to 1 over them in probability). A uniform prior for an unknown
        ``own`` or when nothing was logged into any candidate.

        Raises:
            ConfigError: ``smoothing`` <= 0."""
        if smoothing <= 0:
            raise ConfigError(f"smoothing={smoothing}", field="smoothing",
                              fix="use a pseudo-count > 0, e.g. 1.0")
        k = len(candidates)
        if k == 0:
            return np.zeros(0)
        q = np.asarray([self.into.get(c, 0.0) for c in candidates], dtype=np.float64)
        q = q / q.sum() if q.sum() > 0 else np.full(k, 1.0 / k)
        f = self.flows.get(own, {}) if own is not None else {}
        flow = np.asarray([f.get(c, 0.0) for c in candidates], dtype=np.float64)
        p = (flow + smoothing * q) / (flow.sum() + smoothing)
        return np.log(np.maximum(p, 1e-300))

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict:
        return {"format": FORMAT, "level": self.level, "flows": self.flows, "into": self.into}

    @classmethod
    def from_json(cls, doc: Mapping, source: str = "transition_prior") -> TransitionPrior:
        """Raises:
            ConfigError: not a transition prior of this format, or a negative / non-numeric
                flow."""
        if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
            raise ConfigError(f"{source} is not a transition prior of format {FORMAT}",
                              field="transition_prior",
                              fix="re-run serendip curate and serendip finetune")
        try:
            flows = {str(a): {str(b): float(v) for b, v in row.items()}
                     for a, row in doc.get("flows", {}).items()}
            into = {str(b): float(v) for b, v in doc.get("into", {}).items()}
        except (AttributeError, TypeError, ValueError):
            raise ConfigError(f"{source}: flows must map cluster → cluster → number",
                              field="transition_prior",
                              fix="re-run serendip curate and serendip finetune") from None
        if any(v < 0 for row in flows.values() for v in row.values()) or \
                any(v < 0 for v in into.values()):
            raise ConfigError(f"{source}: a negative flow", field="transition_prior",
                              fix="re-run serendip curate and serendip finetune")
        return cls(int(doc.get("level", 0)), flows, into)


def write_prior(directory: str | os.PathLike, prior: TransitionPrior) -> Path:
    """Write ``<directory>/transition_prior.json`` atomically; returns its path."""
    from serendip.data.io import atomic_write_bytes

    path = Path(directory) / PRIOR_FILE
    atomic_write_bytes(path, json.dumps(prior.to_json()).encode())
    return path


def read_prior(directory: str | os.PathLike) -> TransitionPrior | None:
    """The transition prior curation wrote in ``directory``; None when it predates priors.

    Raises:
        ConfigError: the file is not a transition prior (re-run curate)."""
    path = Path(directory) / PRIOR_FILE
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except ValueError:
        doc = None
    return TransitionPrior.from_json(doc, str(path))
