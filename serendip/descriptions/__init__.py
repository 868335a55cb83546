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

Modules: :mod:`~serendip.descriptions.tokens` (tokens, terms, stop words),
:mod:`~serendip.descriptions.ranking` (term counts per cluster, c-TF-IDF among siblings),
:mod:`~serendip.descriptions.unique` (composition and the uniqueness fall-backs),
:mod:`~serendip.descriptions.describe` (:func:`describe_clusters`, the entry) and
:mod:`~serendip.descriptions.grounding` (:func:`grounding_report`).
"""

from serendip.descriptions.describe import LEVELS, describe_clusters
from serendip.descriptions.grounding import grounding_report
from serendip.descriptions.ranking import term_counts
from serendip.descriptions.tokens import (
    STOPWORD_LANGUAGES,
    TITLE_FILLER,
    UNITS,
    is_term,
    split_token,
    stopwords,
    tokenize,
)

__all__ = [
    "LEVELS", "STOPWORD_LANGUAGES", "TITLE_FILLER", "UNITS", "describe_clusters",
    "grounding_report", "is_term", "split_token", "stopwords", "term_counts", "tokenize",
]
