"""The embedding's settings (:class:`EmbeddingConfig`) and the names of its blocks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from serendip.errors import ConfigError

TEXT_ENCODERS = ("auto", "minilm", "tfidf", "none")
BEHAVIOUR_MATRICES = ("users", "transitions")
COLD_STARTS = ("ridge", "zeros")
HAND_MADE_ON = ("drawn", "all")
BLOCKS = ("text", "image", "behaviour", "shape", "colour", "texture", "layout")
VISUAL_BLOCKS = ("shape", "colour", "texture", "layout")
CONTENT_BLOCKS = ("text", "image") + VISUAL_BLOCKS


@dataclass
class EmbeddingConfig:
    """Which features make an item's clustering embedding, and how much each counts.

    Default weights were chosen on real data (MovieLens-100k, genres as labels; see
    ``benchmarks/bench_topics.py`` and ``benchmarks/results/topics.json``) for text and
    behaviour; for the visual blocks, the fewest hand-made blocks (colour, texture) at the
    lowest weights that keep the synthetic platform's taxonomy recovery no worse next to the
    pretrained image block, on drawn thumbnails only (``hand_made_on``). Without the
    image block (``w_image=0``) give shape and layout weights again (1.0 and 0.2 before). A
    block whose input is absent (no interactions, no thumbnails) is skipped.
    """

    text_encoder: str = field(default="auto", metadata={
        "help": "auto (MiniLM if installed, else TF-IDF) | minilm | tfidf | none"})
    tfidf_dim: int = field(default=64, metadata={
        "help": "SVD dimensions of the TF-IDF fallback; >= 2"})
    image_size: int = field(default=64, metadata={
        "help": "thumbnails are resized to this for the hand-made visual blocks, in pixels; "
                ">= 16"})
    image_px: int = field(default=96, metadata={
        "help": "input side of the pretrained image network, in pixels; >= 32 (96: 5x "
                "cheaper than 224, synthetic ARI as good; see benchmarks/results/topics.json)"})
    w_text: float = field(default=0.3, metadata={
        "help": "weight of the title/description block; >= 0 (chosen on ml-100k)"})
    w_image: float = field(default=1.0, metadata={
        "help": "weight of the pretrained image-network block; >= 0"})
    w_behaviour: float = field(default=1.0, metadata={
        "help": "weight of the engagement (behaviour) block; >= 0"})
    w_shape: float = field(default=0.0, metadata={
        "help": "weight of the hand-made shape block; >= 0 (0: the image network already "
                "separates shapes; synthetic ARI as good without it)"})
    w_colour: float = field(default=0.8, metadata={
        "help": "weight of the hand-made hue-histogram block; >= 0 (0.8: the lowest that keeps "
                "the synthetic taxonomy next to the image network; see hand_made_on)"})
    w_texture: float = field(default=0.6, metadata={
        "help": "weight of the hand-made texture block; >= 0 (see hand_made_on)"})
    w_layout: float = field(default=0.0, metadata={
        "help": "weight of the hand-made layout block; >= 0 (0: the image network already "
                "sees where things are; at least one w_* > 0)"})
    hand_made_on: str = field(default="drawn", metadata={
        "help": "which thumbnails get the hand-made blocks: drawn (synth: URIs, the synthetic "
                "platform's pictures; photos are left to the image network, where hand-made "
                "colour pulls clusters towards colour) | all"})
    behaviour_matrix: str = field(default="users", metadata={
        "help": "users: item × user engagement | transitions: item × next-item counts"})
    behaviour_dim: int = field(default=32, metadata={
        "help": "TruncatedSVD dimensions of the behaviour block; >= 2"})
    behaviour_min_count: int = field(default=20, metadata={
        "help": "engagements an item needs for its own behaviour vector; >= 1"})
    cold_start: str = field(default="zeros", metadata={
        "help": "behaviour of cold items: zeros (content alone decides; better on ml-100k) | "
                "ridge (a map from content to behaviour)"})
    ridge_alpha: float = field(default=1.0, metadata={
        "help": "L2 penalty of the cold-start ridge map; > 0"})
    hue_bins: int = field(default=72, metadata={"help": "bins of the hue histogram; >= 1"})
    hue_sigma: float = field(default=1.5, metadata={
        "help": "smoothing of the hue histogram, in bins; >= 0"})
    shape_grid: int = field(default=16, metadata={
        "help": "side of the foreground-mask grid of the shape block, in cells; >= 1"})
    fg_chroma: float = field(default=0.15, metadata={
        "help": "a pixel with max(rgb) - min(rgb) above this (0..1) is foreground; in [0, 1]"})
    batch_size: int = field(default=64, metadata={
        "help": "items per encoder batch; >= 1"})
    seed: int = field(default=0, metadata={"help": "seed of the SVDs"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raises:
            ConfigError: an unknown choice, a negative weight, all weights 0, or a size/count
                out of range (named by field).
        """
        if self.text_encoder not in TEXT_ENCODERS:
            raise ConfigError(f"unknown text encoder {self.text_encoder!r}", field="text_encoder",
                              fix=f"use one of {', '.join(TEXT_ENCODERS)}")
        if self.behaviour_matrix not in BEHAVIOUR_MATRICES:
            raise ConfigError(f"unknown behaviour matrix {self.behaviour_matrix!r}",
                              field="behaviour_matrix",
                              fix=f"use one of {', '.join(BEHAVIOUR_MATRICES)}")
        if self.cold_start not in COLD_STARTS:
            raise ConfigError(f"unknown cold start {self.cold_start!r}", field="cold_start",
                              fix=f"use one of {', '.join(COLD_STARTS)}")
        if self.hand_made_on not in HAND_MADE_ON:
            raise ConfigError(f"unknown hand_made_on {self.hand_made_on!r}",
                              field="hand_made_on", fix=f"use one of {', '.join(HAND_MADE_ON)}")
        weights = {k: v for k, v in asdict(self).items() if k.startswith("w_")}
        for k, v in weights.items():
            if not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise ConfigError(f"{k}={v!r} must be a finite number >= 0", field=k,
                                  fix=f"give {k} a non-negative value, e.g. 1.0")
        if not any(v > 0 for v in weights.values()):
            raise ConfigError(f"block weights {weights} are all 0", field="w_text",
                              fix="give at least one w_* a value > 0")
        for name, lo in (("image_size", 16), ("image_px", 32), ("behaviour_dim", 2),
                         ("behaviour_min_count", 1), ("tfidf_dim", 2), ("batch_size", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigError(f"{name}={v!r}", field=name, fix=f"use an integer >= {lo}")
        if not (isinstance(self.ridge_alpha, (int, float)) and self.ridge_alpha > 0):
            raise ConfigError(f"ridge_alpha={self.ridge_alpha!r}", field="ridge_alpha",
                              fix="use a positive number, e.g. 1.0")
        for name in ("hue_bins", "shape_grid"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r}", field=name,
                                  fix="use an integer >= 1")
        if not self.hue_sigma >= 0:
            raise ConfigError(f"hue_sigma={self.hue_sigma!r}", field="hue_sigma",
                              fix="use a smoothing >= 0 bins")
        if not 0 <= self.fg_chroma <= 1:
            raise ConfigError(f"fg_chroma={self.fg_chroma!r}", field="fg_chroma",
                              fix="use a chroma in [0, 1], e.g. 0.15")

    def weights(self) -> dict[str, float]:
        """Block name → weight."""
        return {b: float(getattr(self, f"w_{b}")) for b in BLOCKS}
