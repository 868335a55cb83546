"""Controlled generation: a true token trie over the candidate descriptions.

Each candidate is the token-id sequence of ``" " + description`` followed by EOS, exactly as the
training targets spell it (see :mod:`serendip.mllm.data`), so a constrained answer can only be
a whole candidate; its terminal node maps it back to the cluster. Unlike a per-position allowed
set, a trie never combines the head of one description with the tail of another.

The trie is built once per (tokenizer, candidate list) and cached; each node keeps the tensor
of its allowed ids, so a decoding step indexes only those ids instead of building a
full-vocabulary mask in Python. The logits processor constrains the tokens generated after
``start``: the answer marker is already part of the input (direct prompts), or was generated
in a free reasoning phase first (chain of thought).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

from serendip.errors import ConfigError


class _Node:
    __slots__ = ("children", "terminal", "_allowed")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.terminal: int | None = None        # candidate index when a sequence ends here
        self._allowed: torch.Tensor | None = None

    def allowed(self) -> torch.Tensor:
        if self._allowed is None:
            self._allowed = torch.tensor(sorted(self.children), dtype=torch.long)
        return self._allowed


class TokenTrie:
    """Prefix tree over token-id sequences; ``walk`` follows a prefix, ``lookup`` a full one."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        if not sequences:
            raise ConfigError("no candidate descriptions to constrain to", field="candidates",
                              fix="give at least one cluster description")
        self.root = _Node()
        self.max_len = 0
        for idx, seq in enumerate(sequences):
            node = self.root
            for t in seq:
                node = node.children.setdefault(int(t), _Node())
            if node.terminal is not None:
                raise ConfigError(f"candidates {node.terminal} and {idx} tokenize identically",
                                  field="candidates", fix="make cluster descriptions unique")
            if node.children:
                raise ConfigError(f"candidate {idx} is a prefix of another", field="candidates",
                                  fix="end every sequence with EOS")
            node.terminal = idx
            self.max_len = max(self.max_len, len(seq))
        self._check_prefix_free(self.root)

    def _check_prefix_free(self, node: _Node) -> None:
        stack = [node]
        while stack:
            n = stack.pop()
            if n.terminal is not None and n.children:
                raise ConfigError("a candidate is a prefix of another", field="candidates",
                                  fix="end every sequence with EOS")
            stack.extend(n.children.values())

    def walk(self, prefix: Sequence[int]) -> _Node | None:
        node = self.root
        for t in prefix:
            node = node.children.get(int(t))
            if node is None:
                return None
        return node

    def lookup(self, sequence: Sequence[int]) -> int | None:
        """Candidate index of a complete sequence (trailing pad ignored by the caller)."""
        node = self.walk(sequence)
        return None if node is None else node.terminal


_CACHE: dict[tuple, tuple[TokenTrie, list[list[int]]]] = {}


def answer_ids(tokenizer, text: str) -> list[int]:
    """Token ids of an answer piece as training targets spell it: ``" " + text``, no specials."""
    return list(tokenizer(" " + text, add_special_tokens=False)["input_ids"])


def candidate_trie(tokenizer, descriptions: Sequence[str]) -> tuple[TokenTrie, list[list[int]]]:
    """The (cached) trie over ``descriptions`` and their token sequences (ending in EOS)."""
    key = (id(tokenizer), len(tokenizer), tuple(descriptions))
    hit = _CACHE.get(key)
    if hit is None:
        eos = tokenizer.eos_token_id
        seqs = [answer_ids(tokenizer, d) + [eos] for d in descriptions]
        hit = (TokenTrie(seqs), seqs)
        if len(_CACHE) > 32:
            _CACHE.clear()
        _CACHE[key] = hit
    return hit


class TrieLogitsProcessor(LogitsProcessor):
    """Keep only the scores of tokens that continue a candidate, for tokens after ``start``.

    A row that has left the trie (finished and padded) may only emit ``fallback`` so that no row
    is ever all ``-inf`` (which would break beam search).
    """

    def __init__(self, trie: TokenTrie, start: int, fallback: int):
        self.trie = trie
        self.start = start
        self.fallback = torch.tensor([fallback], dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        gen = input_ids[:, self.start:].tolist()
        rows, cols = [], []
        for r, prefix in enumerate(gen):
            node = self.trie.walk(prefix)
            allowed = node.allowed() if node is not None and node.children else self.fallback
            rows.append(torch.full((len(allowed),), r, dtype=torch.long))
            cols.append(allowed)
        ri, ci = torch.cat(rows).to(scores.device), torch.cat(cols).to(scores.device)
        out = torch.full_like(scores, float("-inf"))
        out[ri, ci] = scores[ri, ci]
        return out


class ReasoningProcessor(LogitsProcessor):
    """Chain-of-thought phase: free text until the answer marker, which is forced in time.

    EOS is banned before the marker; when only enough steps remain to spell the marker, the
    marker is forced; once it is complete, only EOS may follow (the row is done). So every row
    ends with the marker within ``budget`` new tokens, and the answer phase can be constrained.
    """

    def __init__(self, marker: Sequence[int], start: int, budget: int, eos: int):
        if budget < len(marker) + 1:
            raise ConfigError(f"reasoning budget {budget} is shorter than the answer marker",
                              field="reasoning_tokens", fix=f"use >= {len(marker) + 1}")
        self.marker = list(marker)
        self.start = start
        self.budget = budget
        self.eos = eos

    def marker_end(self, gen: Sequence[int]) -> int | None:
        """Index just past the first complete marker in ``gen``, or None."""
        m = len(self.marker)
        for i in range(len(gen) - m + 1):
            if list(gen[i:i + m]) == self.marker:
                return i + m
        return None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores.clone()
        neg = float("-inf")
        for r, gen in enumerate(input_ids[:, self.start:].tolist()):
            if self.marker_end(gen) is not None:
                out[r, :] = neg
                out[r, self.eos] = 0.0
                continue
            # longest marker prefix that the generated text already ends with
            j = next((k for k in range(len(self.marker) - 1, 0, -1)
                      if gen[-k:] == self.marker[:k]), 0) if gen else 0
            remaining = self.budget - len(gen)
            if remaining <= len(self.marker) - j + 1:
                out[r, :] = neg
                out[r, self.marker[j]] = 0.0
            else:
                out[r, self.eos] = neg
        return out
