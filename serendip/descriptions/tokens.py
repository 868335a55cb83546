"""Tokens and terms of titles and labels (paper §2 descriptions, steps 1-2 of
:mod:`serendip.descriptions`): NFKC-normalised, lower-cased Unicode tokens, CJK runs cut into
character bigrams, stop words of the common languages, title filler and units; the vectorised
token stream (Arrow) the counting runs on."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import numpy as np
import pyarrow as pa
import regex

# Words that say nothing about a topic in short-video titles (beyond stop words).
TITLE_FILLER = frozenset("""
amazing watch today my best wow day new video videos life vlog try ever this epic insane part real
top quick shorts short official full episode ep subscribe like omg must see viral trending
compilation ultimate crazy incredible awesome cool great good nice check out everyone guys
""".split())

# Units, pack sizes and catalogue abbreviations: never a topic.
UNITS = frozenset("""
oz fl ml cl dl ltr lb lbs kg mg mcg µg cm mm km ft yd yds mi gal qt pt pk pks pcs pc ct cnt pkg
qty ea doz sq cu hw mah kw kwh gb tb mb kb hz khz mhz ghz mph kph rpm psi cc vs approx aprox
""".split())

STOPWORD_LANGUAGES = ("french", "german", "spanish", "italian", "portuguese", "chinese",
                      "japanese")
# Stop words in another language that are common English content words ("War", "Die Hard").
_KEEP_ENGLISH = frozenset("""
man die war hat son force sea total solo fine ben van dove car sub pro point plus bin tempo
""".split())

_CJK = r"\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
_CJK_RUN = re.compile(f"([{_CJK}]+)")
_IS_CJK = re.compile(f"[{_CJK}]")
_ROMAN = re.compile(r"^(x{0,3})(ix|iv|v?i{0,3})$")
_SPLIT = regex.compile(r"[^\p{L}\p{N}\p{M}]+")


def _strip_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", word)
                   if not unicodedata.combining(c))


@lru_cache(maxsize=8)
def _base_stopwords(with_filler: bool = True) -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
    from stop_words import get_stop_words

    words: set[str] = set()
    for lang in STOPWORD_LANGUAGES:
        for w in get_stop_words(lang):
            toks = tokenize(w)
            if _IS_CJK.search(w) and len(toks) > 1:
                continue        # a long CJK stop word would stop its bigrams everywhere
            for t in toks:
                words.add(t)
                words.add(_strip_accents(t))
    words -= _KEEP_ENGLISH
    words |= set(ENGLISH_STOP_WORDS)
    return frozenset(words | TITLE_FILLER | UNITS) if with_filler else frozenset(words)


def stopwords(extra: tuple[str, ...] | list[str] = ()) -> frozenset[str]:
    """Stop words of the common languages, title filler and units, plus ``extra``."""
    return _base_stopwords() | frozenset(t for w in extra for t in tokenize(w))


def split_token(word: str) -> list[str]:
    """A whitespace/punctuation-free token → its tokens: CJK runs of 3+ characters become
    overlapping character bigrams, anything else stays whole."""
    if not _IS_CJK.search(word):
        return [word]
    out: list[str] = []
    for part in _CJK_RUN.split(word):
        if not part:
            continue
        if _IS_CJK.match(part) and len(part) > 2:
            out.extend(part[i:i + 2] for i in range(len(part) - 1))
        else:
            out.append(part)
    return out


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text or "").lower()


def tokenize(text: str | None) -> list[str]:
    """The tokens of one text (see the module docstring); the reference for
    :func:`term_counts`' vectorised path and for grounding checks."""
    return [t for w in _SPLIT.split(_normalise(text or "")) if w for t in split_token(w)]


def is_term(word: str, stop: frozenset[str]) -> bool:
    """Whether a token may name a topic (not a stop word, unit, number or single letter)."""
    if not word or word in stop:
        return False
    if _IS_CJK.search(word):
        return not all(c.isnumeric() for c in word)
    if any(c.isdigit() or c.isnumeric() for c in word) or len(word) < 2:
        return False
    return not _ROMAN.match(word)


def _labels_text(labels) -> list[str]:
    out = []
    for v in labels:
        if v is None:
            out.append("")
        elif isinstance(v, (list, tuple)):
            # a stop word between labels: no phrase spans two labels ("sci fi", not "fi drama")
            out.append(" and ".join(str(x) for x in v if x is not None))
        else:
            out.append(str(v))
    return out


def _token_stream(texts: list[str | None]) -> tuple[np.ndarray, list[str], np.ndarray,
                                                   np.ndarray]:
    """Vectorised :func:`tokenize` over many texts: (text index per token, vocabulary, token
    id, whether the token may form a phrase with its right neighbour)."""
    import pyarrow.compute as pc

    n = len(texts)
    # NFKC in Python: Arrow's utf8_normalize("NFKC") returned decomposed text (pyarrow 25)
    arr = pa.array([t if t is None or t.isascii() else unicodedata.normalize("NFKC", t)
                    for t in texts], pa.string()).fill_null("")
    arr = pc.utf8_lower(arr)
    arr = pc.replace_substring_regex(arr, r"[^\p{L}\p{N}\p{M}]+", " ")
    toks = pc.utf8_split_whitespace(arr)
    flat = toks.flatten()
    lengths = pc.list_value_length(toks).to_numpy(zero_copy_only=False).astype(np.int64)
    item_of = np.repeat(np.arange(n), lengths)
    enc = pc.dictionary_encode(flat)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()
    words = enc.dictionary.to_pylist()
    tid = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    pieces = [split_token(w) for w in words]
    # a word is "joinable" with its right neighbour unless it ends a word that was cut into
    # CJK bigrams (overlapping bigrams are not phrases)
    if all(len(p) == 1 for p in pieces):
        joinable = np.ones(len(tid), bool)
        return item_of, words, tid, joinable
    vocab: dict[str, int] = {}
    flat_ids, offsets, cut = [], [0], []
    for p in pieces:
        for t in p:
            flat_ids.append(vocab.setdefault(t, len(vocab)))
        offsets.append(len(flat_ids))
        cut.append(len(p) > 1)
    flat_ids_a = np.asarray(flat_ids, np.int64)
    offsets_a = np.asarray(offsets, np.int64)
    counts = np.diff(offsets_a)[tid]
    starts = np.repeat(offsets_a[:-1][tid], counts)
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    new_tid = flat_ids_a[starts + within]
    new_item = np.repeat(item_of, counts)
    joinable = ~np.repeat(np.asarray(cut, bool)[tid], counts)
    return new_item, list(vocab), new_tid, joinable


def _unique_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distinct (a, b) pairs as a (2 × m) array, sorted by a then b (one 1-D sort)."""
    if not len(a):
        return np.zeros((2, 0), np.int64)
    a, b = a.astype(np.uint64), b.astype(np.uint64)
    span = np.uint64(int(b.max()) + 1)
    if float(a.max() + 1) * float(span) < 2.0 ** 63:
        key = np.unique(a * span + b)
        return np.stack([key // span, key % span]).astype(np.int64)
    return np.unique(np.stack([a, b]), axis=1).astype(np.int64)
