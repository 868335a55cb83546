"""Prompt strategies of the paper's Figure 2, and frame selection.

* ``text``       — title + the context item's cluster description (Prompt 1)
* ``video``      — the frames only (Prompt 2)
* ``multimodal`` — frames + title + description, answered directly (Prompt 3)
* ``cot``        — frames; the model first describes the video (its own topic), then names
                   the serendipitous cluster after :data:`ANSWER_MARKER` (Prompt 4)

Prompts are plain text without model-specific image tokens: the model adapter
(``serendip.mllm``) inserts one image placeholder per image in the way its processor expects.
Targets of every strategy end with ``ANSWER_MARKER + description``, so answers are parsed and
constrained decoding starts the same way for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from serendip.data.media import sample_frames
from serendip.errors import ConfigError

STRATEGIES = ("text", "video", "multimodal", "cot")
ANSWER_MARKER = "Answer:"
INSTRUCTION = "Suggest a new interest cluster that a viewer of this video would enjoy."


@dataclass
class PromptConfig:
    """The prompt strategy of the paper's Figure 2 and the media it shows (§3.1)."""

    strategy: str = field(default="cot", metadata={
        "help": "prompt strategy: text | video | multimodal | cot (Figure 2; cot: describe "
                "the video, then name the cluster)"})
    n_frames: int = field(default=4, metadata={
        "help": "frames uniformly sampled from each video; >= 1 (the paper: 1, 2, 4, 8); "
                "ignored with use_thumbnail"})
    use_thumbnail: bool = field(default=False, metadata={
        "help": "show the item's thumbnail instead of frames (paper Fig. 5)"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown prompt strategy {self.strategy!r}", field="strategy",
                              fix=f"use one of {', '.join(STRATEGIES)}")
        if not self.use_thumbnail and self.n_frames < 1:
            raise ConfigError(f"n_frames={self.n_frames}", field="n_frames",
                              fix="use 1 or more frames (the paper: 1, 2, 4, 8), or "
                                  "use_thumbnail=true")

    @property
    def uses_images(self) -> bool:
        return self.strategy != "text"


def prompt_manifest(cfg: PromptConfig) -> dict:
    """The prompt config as the one manifest that travels from curation to the model: the
    ``prompt`` object of ``curation.json`` and of a model's ``serendip.json`` (every field of
    :class:`PromptConfig`, verbatim).

    Raises:
        ConfigError: ``cfg`` is not valid."""
    from serendip.config import to_dict

    cfg.check()
    return to_dict(cfg)


def read_prompt_manifest(doc: dict, source: str, fix: str) -> PromptConfig:
    """The :class:`PromptConfig` of the ``prompt`` object of ``doc`` (read from ``source``),
    exactly as written — never inferred from the examples or filled with defaults.

    Raises:
        ConfigError: ``doc`` has no ``prompt`` object (``fix`` says which stage writes it), or
            the object has an unknown field, a value of the wrong type or out of range."""
    from serendip.config import load_config

    manifest = doc.get("prompt") if isinstance(doc, dict) else None
    if not isinstance(manifest, dict):
        raise ConfigError(f"{source} has no prompt manifest (it was written by an older "
                          "version)", field="prompt", fix=fix)
    try:                                  # the one loader: types checked, no coercion guesses
        return load_config(PromptConfig, settings=manifest)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e.message}", field=f"prompt.{e.field}", fix=fix) from None


def build_prompt(cfg: PromptConfig, title: str, context_description: str) -> str:
    cfg.check()
    if cfg.strategy == "text":
        return f"Video title: {title}. Its topic: {context_description}. {INSTRUCTION}"
    if cfg.strategy == "video":
        return f"Watch the video. {INSTRUCTION}"
    if cfg.strategy == "multimodal":
        return (f"Watch the video. Title: {title}. Its topic: {context_description}. "
                f"{INSTRUCTION}")
    return (f"Watch the video. First describe what the video is about, then {INSTRUCTION[0].lower()}"
            f"{INSTRUCTION[1:]}")


def build_target(cfg: PromptConfig, target_description: str, reasoning: str | None) -> str:
    """The text the model learns to generate; for CoT a description of the video comes first."""
    if cfg.strategy == "cot":
        if not reasoning:
            raise ConfigError("chain-of-thought needs a reasoning text", field="reasoning",
                              fix="curate examples with strategy 'cot'")
        return f"The video is about {reasoning}. {ANSWER_MARKER} {target_description}"
    return f"{ANSWER_MARKER} {target_description}"


def parse_answer(generated: str) -> str:
    """The final answer of a generation: the text after the last answer marker, stripped."""
    if ANSWER_MARKER in generated:
        generated = generated.rsplit(ANSWER_MARKER, 1)[1]
    return generated.strip()


def select_images(cfg: PromptConfig, thumbnail: str | bytes | None, frames: list | None) -> list:
    """Media references fed to the model: none (text), the thumbnail, or N uniform frames."""
    if not cfg.uses_images:
        return []
    if cfg.use_thumbnail:
        if thumbnail is None or (isinstance(thumbnail, str) and not thumbnail.strip()):
            raise ConfigError("item has no thumbnail", field="thumbnail",
                              fix="set use_thumbnail=false to use frames, or use the text "
                                  "prompt (--strategy text)")
        return [thumbnail]
    return sample_frames([f for f in (frames or []) if not (isinstance(f, str) and not f.strip())],
                         cfg.n_frames)
