"""Composing a description from its words and the fall-backs that keep descriptions unique
when a cluster's grounded words are spent (step 5 of :mod:`serendip.descriptions`): another
order of its words, a borrowed word, and last its path spelled out — never a number."""

from __future__ import annotations

import itertools


def _join(words: list[str]) -> str:
    seen: list[str] = []
    for part in words:
        for w in part.split():
            if w not in seen:
                seen.append(w)
    return " ".join(seen)


def _compose(own: list[str], prefix: list[str]) -> str:
    """A description: (grounded parent words) + own terms, each word once."""
    return _join(prefix + own)


def _reorder(text: str, used: set[str]) -> str | None:
    """Another order of the same (grounded) words, or of some of them, not taken yet."""
    words = text.split()
    for r in range(len(words), 0, -1):          # all the words first, then fewer of them
        for perm in itertools.islice(itertools.permutations(words, r), 200):
            t = " ".join(perm)
            if t not in used and t != text:
                return t
    return None


def _borrow(text: str, words: list[str], used: set[str]) -> str | None:
    have = text.split()
    for w in words:
        if w not in have:
            t = " ".join(have + [w])
            if t not in used:
                return t
    return None


def _last_resort(cid: str, text: str, used: set[str]) -> str:
    """Members with nothing left to tell them apart: name the cluster by its path in words."""
    names = ("zero one two three four five six seven eight nine").split()
    path = " ".join("branch " + " ".join(names[int(d)] for d in part) for part in cid.split("."))
    t = f"{text} {path}".strip() if text else path
    while t in used:
        t = t + " again"
    return t
