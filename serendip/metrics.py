"""Offline metrics as pure functions (paper §3.1), a flat module others extend.

* :func:`match_rate` — share of answers that exactly equal *any* cluster description: does the
  model speak the platform's cluster vocabulary (controlled generation makes it 1.0)?
* :func:`recall` — share of answers that exactly equal the *label's* description: does it pick
  the serendipitous cluster users were satisfied with?

Answers are compared exactly (after stripping surrounding whitespace), as the paper does; an
answer of ``None`` (no answer produced) never matches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from serendip.errors import SerendipError


def _norm(x: str | None) -> str | None:
    return None if x is None else str(x).strip()


def _nonempty(values: Sequence, field: str) -> None:
    if len(values) == 0:
        raise SerendipError("no answers to score", field=field,
                            fix="evaluate on at least one example")


def match_rate(answers: Sequence[str | None], descriptions: Iterable[str]) -> float:
    """Fraction of ``answers`` that are exactly one of ``descriptions`` (paper §3.1), in [0, 1].

    Raises:
        SerendipError: no answers.
    """
    _nonempty(answers, "answers")
    valid = {_norm(d) for d in descriptions}
    return sum(_norm(a) in valid for a in answers if a is not None) / len(answers)


def recall(answers: Sequence[str | None], labels: Sequence[str]) -> float:
    """Fraction of ``answers`` exactly equal to their label description (top-1 recall, paper
    §3.1), in [0, 1].

    Raises:
        SerendipError: no answers, or not one label per answer.
    """
    _nonempty(answers, "answers")
    if len(answers) != len(labels):
        raise SerendipError(f"{len(answers)} answers for {len(labels)} labels", field="labels",
                            fix="give one label per answer")
    return sum(a is not None and _norm(a) == _norm(b) for a, b in zip(answers, labels)) \
        / len(answers)


def recall_at_k(ranked: Sequence[Sequence[str | None]], labels: Sequence[str]) -> float:
    """Fraction of examples whose label is among their top-k answers (paper §3.1's recall over
    k answers), in [0, 1].

    Raises:
        SerendipError: no answer lists, or not one label per list.
    """
    _nonempty(ranked, "ranked")
    if len(ranked) != len(labels):
        raise SerendipError(f"{len(ranked)} answer lists for {len(labels)} labels",
                            field="labels", fix="give one label per answer list")
    return sum(_norm(b) in {_norm(a) for a in r if a is not None}
               for r, b in zip(ranked, labels)) / len(ranked)


def recall_at_k_over_candidates(ranked: Sequence[Sequence[str | None]], labels: Sequence[str],
                                candidates: Sequence[Iterable[str]], k: int) -> float:
    """Top-k recall over the candidates (issue 15), range [0, 1]: each ranked answer list is
    first restricted to its context's serendipitous candidates (:mod:`serendip.candidates`;
    the context's own cluster and non-siblings are dropped, order kept), then the label counts
    as recalled when it is among the first ``k`` remaining answers. With k ≥ |candidates| every
    full candidate ranking scores 1.0, so read it beside the number of candidates.

    Raises:
        SerendipError: no answers, lengths differ, or k < 1.
    """
    _nonempty(ranked, "ranked")
    if not len(ranked) == len(labels) == len(candidates):
        raise SerendipError(f"{len(ranked)} answer lists, {len(labels)} labels, "
                            f"{len(candidates)} candidate sets", field="labels",
                            fix="give one label and one candidate set per answer list")
    if k < 1:
        raise SerendipError(f"k={k}", field="k", fix="use k >= 1")
    hits = 0
    for r, b, cand in zip(ranked, labels, candidates):
        allowed = {_norm(c) for c in cand}
        kept = [_norm(a) for a in r if a is not None and _norm(a) in allowed]
        kept = list(dict.fromkeys(kept))[:k]
        hits += _norm(b) in kept
    return hits / len(ranked)
