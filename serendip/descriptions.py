"""Cluster descriptions people can read and trust (paper §2: "a unique natural language
description to encapsulate its topical focus").

For every cluster of the tree, a short phrase made of words its own members use:

1. **Tokens** (Unicode-aware, :func:`tokenize`): NFKC-normalised, lower-cased; a token is a run
   of letters, digits and combining marks (so ``fútbol``, ``crème brûlée``, ``Straße`` stay
   whole; apostrophes and hyphens separate: ``l'amour`` → ``l`` ``amour``). Scripts written
   without spaces (Han, Hiragana, Katakana) are cut into overlapping character bigrams
   (``足球技巧`` → ``足球`` ``球技`` ``技巧``); a run of one or two such characters is one
   token (``猫``, ``吉他``), so space-separated CJK words stay whole.
2. **Terms** are tokens that can name a topic: not stop words (English from scikit-learn;
   French, German, Spanish, Italian, Portuguese, Chinese and Japanese from the ``stop-words``
   package, with and without accents), not title filler ("amazing", "video"), not a unit
   ("oz", "kg", "pk"), no digit in a Latin-script token and no all-numeral CJK token, not a
   roman numeral (``ii`` … ``xxxix``), not a single Latin letter; plus *phrases*: two adjacent
   terms that occur together in at least ``min_phrase_count`` titles and account for most uses
   of their rarer word ("pasta recipe", "for beginners" is not one: "for" is a stop word).
   Item labels (a ``labels`` column, e.g. genres), when present, add their terms to the item.
3. **Ranking**: class-based TF-IDF among siblings (BERTopic's c-TF-IDF: per-class term
   frequency, L1-normalised, times ``log(1 + A / f_t)`` with ``A`` the average number of terms
   per sibling class and ``f_t`` the term's frequency over the siblings), counting each item
   once per term; a term must be over-represented against the parent (lift) and *grounded*: it
   occurs in at least ``description_min_share`` of the cluster's members (titles or labels).
   A broad node is named by a word its children share.
4. **Composition**: the cluster's best term; from level ``description_parent_level`` on
   prefixed by the parent's words that are grounded in this cluster too.
5. **Uniqueness** over the whole tree, never by a number: where descriptions clash, the
   largest cluster keeps the name and the others add their next distinguishing term
   (c-TF-IDF order), then the parent's grounded words, then their other grounded terms. Only
   when a cluster's grounded words are all spent (tiny clusters with near-identical titles)
   does it fall back to another order or a subset of its words, then words fewer of its
   members use, its title filler, a word of its ancestors and, last, its path spelled out;
   :func:`grounding_report` (``tree.stats["descriptions"]``) counts what is not grounded.

Every word of a description is a term, so no description ends in a number.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections import Counter
from functools import lru_cache

import numpy as np
import pyarrow as pa
import regex

LEVELS = 4

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


def term_counts(titles: list[str | None], nodes: np.ndarray, ids: list[list[str]],
                stop: frozenset[str], labels: list | None = None, min_phrase_count: int = 3,
                stickiness: float = 0.6) -> tuple[list[dict[str, Counter]], Counter]:
    """Per level, per cluster: in how many member items each term occurs (titles and labels
    together, each item counted once per term), and the same over the catalogue. Vectorised
    with Arrow and scipy: a million titles take seconds.

    Args:
        titles: n item titles (None = empty).
        nodes: (n × 4) int, ``nodes[i, l]`` = index into ``ids[l]`` of item i's cluster.
        ids: per level, the cluster ids.
        stop: words that are never terms (see :func:`stopwords`).
        labels: optional n label lists (or strings), e.g. genres.
    """
    import scipy.sparse as sp

    n = len(titles)
    texts = list(titles)
    if labels is not None:
        texts = texts + _labels_text(labels)
    item_of, vocab, tid, joinable = _token_stream(texts)
    v = len(vocab)
    term = np.array([is_term(w, stop) for w in vocab], bool)
    # phrases: adjacent terms within a title (not across a title and its labels)
    same = (item_of[1:] == item_of[:-1]) & joinable[:-1] if len(tid) > 1 else np.zeros(0, bool)
    a, b = tid[:-1][same], tid[1:][same]
    ok = term[a] & term[b] & (a != b)
    codes = a[ok] * v + b[ok]
    doc = item_of[:-1][same][ok] % n
    # count each phrase once per item
    pair = _unique_pairs(doc, codes)
    uniq, inv, cnt = np.unique(pair[1], return_inverse=True, return_counts=True)
    ua, ub = uniq // v, uniq % v
    item_tok = _unique_pairs(item_of % n, tid)
    df = np.bincount(item_tok[1], minlength=v)
    sticky = (cnt >= min_phrase_count) & (cnt >= stickiness * np.minimum(df[ua], df[ub]))
    phrase_of_code = np.full(len(uniq), -1)
    phrase_of_code[sticky] = np.arange(int(sticky.sum()))
    phrase_names = [f"{vocab[x]} {vocab[y]}" for x, y in zip(ua[sticky], ub[sticky])]
    keep = term[item_tok[1]]
    ph = phrase_of_code[inv] if len(uniq) else np.zeros(0, np.int64)
    rows = np.concatenate([item_tok[0][keep], pair[0][ph >= 0]])
    cols = np.concatenate([item_tok[1][keep], v + ph[ph >= 0]])
    names = vocab + phrase_names
    x = sp.csr_matrix((np.ones(len(rows), np.int64), (rows, cols)), shape=(n, len(names)))
    x.sum_duplicates()
    x.data[:] = 1
    total = np.asarray(x.sum(axis=0)).ravel()
    all_terms = Counter({names[j]: int(total[j]) for j in np.flatnonzero(total)})
    level_counts: list[dict[str, Counter]] = []
    for lvl in range(len(ids)):
        m = sp.csr_matrix((np.ones(n, np.int64), (nodes[:, lvl], np.arange(n))),
                          shape=(len(ids[lvl]), n))
        per = (m @ x).tocsr()
        counts: dict[str, Counter] = {}
        for i, cid in enumerate(ids[lvl]):
            lo, hi = per.indptr[i], per.indptr[i + 1]
            counts[cid] = Counter({names[j]: int(c) for j, c in
                                   zip(per.indices[lo:hi], per.data[lo:hi]) if c})
        level_counts.append(counts)
    return level_counts, all_terms


def _own_terms(counts: dict[str, Counter], siblings: list[str], parent_total: Counter,
               children: dict[str, list[Counter]], sizes: dict[str, int], min_share: float,
               min_lift: float) -> dict[str, list[str]]:
    """Per sibling: its grounded terms ranked by c-TF-IDF among the siblings (see the module
    docstring), each word used once (a word is replaced by the phrase that nearly always
    surrounds it)."""
    tokens = {s: sum(counts[s].values()) for s in siblings}
    avg = max(1.0, sum(tokens.values()) / max(len(siblings), 1))
    ptot = max(1, sum(parent_total.values()))
    freq: Counter = Counter()
    for s in siblings:
        freq.update(counts[s])
    out: dict[str, list[str]] = {}
    for s in siblings:
        c, tot = counts[s], max(tokens[s], 1)
        need = max(1, math.ceil(min_share * sizes[s] - 1e-9))
        kids = [(k, max(1, sum(k.values()))) for k in children.get(s, [])]
        scored = []
        for term, cnt in c.items():
            if cnt < need:
                continue
            tf = cnt / tot
            lift = tf / (parent_total[term] / ptot) if parent_total[term] else 1.0
            if lift < min_lift and len(siblings) > 1:
                continue
            score = tf * math.log(1.0 + avg / freq[term])
            if kids:
                score *= (1 + sum(k[term] / kt >= 0.3 * tf for k, kt in kids)) / (1 + len(kids))
            scored.append((score, term))
        scored.sort(key=lambda t: (-t[0], -len(t[1]), t[1]))
        chosen: list[str] = []
        used: set[str] = set()
        for _, term in scored[:60]:
            if " " not in term:   # prefer the phrase that (nearly) always surrounds this word
                phrases = [(cc, p) for p, cc in c.items() if " " in p and term in p.split()
                           and cc >= 0.6 * c[term] and cc >= need]
                if phrases:
                    term = max(phrases)[1]
            words = set(term.split())
            if words <= used:
                continue
            used |= words
            chosen.append(term)
        out[s] = chosen
    return out


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


def describe_clusters(titles: list[str | None], nodes: np.ndarray, ids: list[list[str]],
                      cfg, labels: list | None = None) -> dict[str, str]:
    """A unique, short, grounded description for every cluster id (module docstring).

    Args:
        titles: n item titles.
        nodes: (n × 4) int; ``nodes[i, l]`` is the index into ``ids[l]`` of item i's
            level-(l+1) cluster.
        ids: per level, the cluster ids (path style, ``"3.1.0"``).
        cfg: a :class:`~serendip.tree.ClusterConfig` (``description_*`` fields,
            ``extra_stopwords``).
        labels: optional n label lists (e.g. genres) that may also name a cluster.

    Returns:
        cluster id → description (unique over the tree; words separated by single spaces).
    """
    stop = stopwords(tuple(cfg.extra_stopwords))
    min_share = float(getattr(cfg, "description_min_share", 0.1))
    level_counts, all_terms = term_counts(titles, nodes, ids, stop, labels=labels)
    sizes = {}
    for lvl in range(len(ids)):
        cnt = np.bincount(nodes[:, lvl], minlength=len(ids[lvl]))
        sizes.update({cid: int(c) for cid, c in zip(ids[lvl], cnt)})
    descriptions: dict[str, str] = {}
    used: set[str] = set()
    lenient = stop - (TITLE_FILLER - _base_stopwords(with_filler=False))   # filler, not stop words
    label_words = {t for text in set(_labels_text(labels)) for t in tokenize(text)} \
        if labels is not None else set()
    heads: dict[str, str] = {}

    member_index: dict[int, tuple[dict[str, int], np.ndarray, np.ndarray]] = {}

    def _filler_words(cid: str, lvl: int, need: int = 1, cap: int = 2000) -> list[str]:
        """Title filler of the cluster's members ("compilation") found in >= need of them
        (counted over at most ``cap`` members)."""
        if lvl not in member_index:
            order = np.argsort(nodes[:, lvl], kind="stable")
            bounds = np.searchsorted(nodes[order, lvl], np.arange(len(ids[lvl]) + 1))
            member_index[lvl] = ({c: j for j, c in enumerate(ids[lvl])}, order, bounds)
        pos, order, bounds = member_index[lvl]
        j = pos[cid]
        members = order[bounds[j]:bounds[j + 1]]
        scale = min(1.0, cap / max(len(members), 1))
        words = Counter(w for i in members[:cap] for w in set(tokenize(titles[i]))
                        if is_term(w, lenient))
        return [w for w, k in sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))
                if k >= need * scale]

    for lvl in range(len(ids)):
        counts = level_counts[lvl]
        children: dict[str, list[Counter]] = {}
        if lvl + 1 < len(ids):
            for cid, cnt in level_counts[lvl + 1].items():
                children.setdefault(cid.rsplit(".", 1)[0], []).append(cnt)
        by_parent: dict[str, list[str]] = {}
        for cid in ids[lvl]:
            by_parent.setdefault(cid.rsplit(".", 1)[0] if lvl else "", []).append(cid)
        ranked: dict[str, list[str]] = {}
        for sibs in by_parent.values():
            ptot = Counter()
            for s in sibs:
                ptot.update(counts[s])
            ranked.update(_own_terms(counts, sibs, ptot if lvl else all_terms, children, sizes,
                                     min_share, cfg.description_min_lift))
        options: dict[str, list[list[str]]] = {}
        need_of: dict[str, int] = {}
        loose: dict[str, list[str]] = {}
        borrowed: dict[str, list[str]] = {}
        state: dict[str, list[str]] = {}
        for cid in ids[lvl]:
            need = need_of[cid] = max(1, math.ceil(min_share * sizes[cid] - 1e-9))
            c = counts[cid]
            pid = cid.rsplit(".", 1)[0] if lvl else ""
            parent = descriptions.get(pid, "")
            # a term the parent already says stays: c-TF-IDF among siblings and the lift
            # filter keep words all siblings share out; a parent named after this child's
            # topic ("crème brûlée") leaves the child its topic plus a distinguishing term
            own = ranked[cid]
            grounded_parent = [w for w in parent.split() if c[w] >= need]
            others = sorted((t for t, k in c.items() if k >= need and " " not in t),
                            key=lambda t: (-c[t], t))
            ancestors = []
            a = cid
            while "." in a:
                a = a.rsplit(".", 1)[0]
                ancestors += descriptions[a].split()
            start = own[:1] or grounded_parent[:1] or others[:1]
            heads[cid] = " ".join(start)
            # from description_parent_level on: the parent's own head term, where grounded here
            prefix = [w for w in heads.get(pid, "").split() if c[w] >= need] \
                if lvl + 1 >= cfg.description_parent_level else []
            state[cid] = prefix + start
            # what a clash may add, best first: the next distinguishing terms (up to
            # description_words own terms), the parent's grounded words, further own terms,
            # any other grounded term
            k = max(1, int(cfg.description_words))
            options[cid] = [[t] for t in own[1:k]] + [[w] for w in grounded_parent] + \
                [[t] for t in own[k:]] + [[t] for t in others]
            # spent clusters: a label word of some member first (the issue's "or in the item
            # labels"), then a title word fewer members use
            loose[cid] = sorted((t for t in c if " " not in t),
                                key=lambda t: (t not in label_words, -c[t], t))
            borrowed[cid] = ancestors
        for _ in range(64):
            current = {cid: _compose(state[cid], []) for cid in ids[lvl]}
            groups: dict[str, list[str]] = {}
            for cid, t in current.items():
                groups.setdefault(t, []).append(cid)
            clash = []
            for t, g in groups.items():
                if t in used or not t:
                    clash += g
                elif len(g) > 1:   # the largest keeps the name, the others add a term
                    clash += sorted(g, key=lambda x: (-sizes[x], x))[1:]
            if not clash:
                break
            progressed = False
            for cid in clash:
                have = set(current[cid].split())
                while options[cid]:
                    nxt = options[cid].pop(0)
                    if not set(" ".join(nxt).split()) <= have:
                        state[cid] = state[cid] + nxt
                        progressed = True
                        break
            if not progressed:
                break
        taken = Counter(_compose(state[cid], []) for cid in ids[lvl])
        for cid in sorted(ids[lvl], key=lambda x: (-sizes[x], x)):
            t = _compose(state[cid], [])
            if t in used or not t or taken[t] > 1:
                # no grounded term tells it apart: another order of its own words, then a word
                # found in fewer of its members, its title filler, a word of its ancestors,
                # and only then its path
                taken[t] -= 1
                avoid = used | {k for k, v in taken.items() if v > 0}
                t = _reorder(t, avoid) or _borrow(t, _filler_words(cid, lvl, need_of[cid]),
                                                  avoid) \
                    or _borrow(t, loose[cid], avoid) or _borrow(t, _filler_words(cid, lvl), avoid) \
                    or _borrow(t, borrowed[cid], avoid) or _last_resort(cid, t, avoid)
            descriptions[cid] = t
            used.add(t)
    return descriptions


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


def grounding_report(descriptions: dict[str, str], titles: list[str | None], nodes: np.ndarray,
                     ids: list[list[str]], labels: list | None = None,
                     min_share: float = 0.1) -> dict:
    """How far the descriptions can be trusted, per the issue-14 rules.

    Returns:
        ``{"clusters", "grounded_share"`` (every word in >= ``min_share`` of the members'
        titles or labels), ``"grounded_or_in_labels_share"`` (every word in >= ``min_share``
        of them, or in some member's labels: issue 14's reading), ``"in_members_share"``
        (every word in at least one member),
        ``"ends_in_number"``, ``"ungrounded"`` (up to 20 cluster ids), ``"min_share"}``.
    """
    import scipy.sparse as sp

    n = len(titles)
    texts = list(titles) + (_labels_text(labels) if labels is not None else [])
    item_of, vocab, tid, _ = _token_stream(texts)
    pairs = _unique_pairs(item_of % max(n, 1), tid)
    x = sp.csr_matrix((np.ones(pairs.shape[1], np.int64), (pairs[0], pairs[1])),
                      shape=(n, len(vocab)))
    x.data[:] = 1
    col = {w: j for j, w in enumerate(vocab)}
    lab_x = None
    if labels is not None:       # the labels' own tokens, for the "or in the labels" reading
        lab_pairs = _unique_pairs(item_of[item_of >= n] - n, tid[item_of >= n])
        lab_x = sp.csr_matrix((np.ones(lab_pairs.shape[1], np.int64),
                               (lab_pairs[0], lab_pairs[1])), shape=(n, len(vocab)))
    grounded = in_members = ends = title_or_label = 0
    bad: list[str] = []
    for lvl in range(len(ids)):
        m = sp.csr_matrix((np.ones(n, np.int64), (nodes[:, lvl], np.arange(n))),
                          shape=(len(ids[lvl]), n))
        per = (m @ x).tocsr()
        lab_per = (m @ lab_x).tocsr() if lab_x is not None else None
        size = np.bincount(nodes[:, lvl], minlength=len(ids[lvl]))
        for i, cid in enumerate(ids[lvl]):
            if cid not in descriptions:
                continue
            words = descriptions[cid].split()
            if not words or not size[i]:
                bad.append(cid)
                continue
            share = [per[i, col[w]] / size[i] if w in col else 0.0 for w in words]
            if all(sh >= min_share - 1e-9 for sh in share):
                grounded += 1
            else:
                bad.append(cid)
            if lab_x is not None:
                lab_hit = [w in col and lab_per[i, col[w]] > 0 for w in words]
                title_or_label += all(sh >= min_share - 1e-9 or hit
                                      for sh, hit in zip(share, lab_hit))
            in_members += all(sh > 0 for sh in share)
            ends += bool(re.search(r"\d$", words[-1]) or _ROMAN.match(words[-1]))
    k = max(len(descriptions), 1)
    if lab_x is None:
        title_or_label = grounded
    return {"clusters": len(descriptions), "grounded_share": round(grounded / k, 4),
            "grounded_or_in_labels_share": round(title_or_label / k, 4),
            "in_members_share": round(in_members / k, 4), "ends_in_number": ends,
            "ungrounded": bad[:20], "min_share": min_share}
