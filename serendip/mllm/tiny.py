"""The offline tiny default VLM: a CLIP-style vision tower + a Llama-style decoder, built from a
config with random weights, and a byte-level BPE tokenizer trained here on the platform's own
text (titles, cluster descriptions, prompt templates). Nothing is downloaded.

It is a real ``LlavaForConditionalGeneration`` + ``LlavaProcessor``: it saves with
``save_pretrained`` (safetensors) and reloads with ``AutoModelForImageTextToText`` /
``AutoProcessor`` like any Hugging Face VLM, so every code path past construction is the one a
pretrained model takes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from serendip.prompts import ANSWER_MARKER, INSTRUCTION, STRATEGIES, PromptConfig, build_prompt

PAD, BOS, EOS, IMAGE = "<pad>", "<s>", "</s>", "<image>"


@dataclass
class TinyVLMConfig:
    """Sizes of the tiny default (measured: ~1M parameters, 16 tokens per 64-px image)."""

    image_size: int = field(default=64, metadata={
        "help": "side of the square input image, in pixels; >= 1, a multiple of patch_size"})
    patch_size: int = field(default=16, metadata={
        "help": "side of one vision patch, in pixels; >= 1 ((image_size/patch_size)^2 image "
                "tokens per image)"})
    vision_hidden: int = field(default=64, metadata={
        "help": "vision tower hidden size; >= 1, a multiple of vision_heads"})
    vision_layers: int = field(default=2, metadata={"help": "vision tower layers; >= 1"})
    vision_heads: int = field(default=4, metadata={
        "help": "vision tower attention heads; >= 1, dividing vision_hidden"})
    text_hidden: int = field(default=128, metadata={
        "help": "decoder hidden size; >= 1, a multiple of text_heads"})
    text_layers: int = field(default=2, metadata={"help": "decoder layers; >= 1"})
    text_heads: int = field(default=4, metadata={
        "help": "decoder attention heads; >= 1, dividing text_hidden"})
    text_intermediate: int = field(default=256, metadata={
        "help": "decoder MLP inner size; >= 1"})
    vocab_size: int = field(default=1000, metadata={
        "help": "BPE vocabulary upper bound, in tokens; >= 1 (training stops earlier on a "
                "small corpus)"})
    max_positions: int = field(default=1024, metadata={
        "help": "longest sequence (prompt + image tokens + target), in tokens; >= 1"})
    seed: int = field(default=0, metadata={"help": "seed of the random initial weights"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Sizes the tiny model can be built with (checked before anything is built).

        Raises:
            ConfigError: a size < 1, a hidden size not divisible by its heads, or an image
                size not divisible by the patch size."""
        from serendip.errors import ConfigError

        for name in ("image_size", "patch_size", "vision_hidden", "vision_layers",
                     "vision_heads", "text_hidden", "text_layers", "text_heads",
                     "text_intermediate", "vocab_size", "max_positions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tiny.{name}={getattr(self, name)}", field=f"tiny.{name}",
                                  fix="use >= 1")
        for hidden, heads in (("vision_hidden", "vision_heads"), ("text_hidden", "text_heads")):
            if getattr(self, hidden) % getattr(self, heads):
                raise ConfigError(f"tiny.{hidden}={getattr(self, hidden)} is not a multiple of "
                                  f"tiny.{heads}={getattr(self, heads)}", field=f"tiny.{heads}",
                                  fix=f"choose tiny.{heads} dividing tiny.{hidden}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"tiny.image_size={self.image_size} is not a multiple of "
                              f"tiny.patch_size={self.patch_size}", field="tiny.patch_size",
                              fix="choose a patch size dividing the image size (e.g. 16 for 64)")


def prompt_templates() -> list[str]:
    """The fixed text every strategy produces, so the tokenizer learns compact tokens for it."""
    out = [ANSWER_MARKER, INSTRUCTION, "The video is about"]
    for s in STRATEGIES:
        out.append(build_prompt(PromptConfig(strategy=s, n_frames=1), "title", "topic"))
    return out


def tokenizer_corpus(titles: Iterable[str], descriptions: Iterable[str]) -> list[str]:
    """Titles + cluster descriptions (several times: they are what the model must spell) +
    prompt templates, in a deterministic order."""
    descs = [str(d) for d in descriptions]
    corpus = [str(t) for t in titles if t]
    corpus += descs * 4 + [f"{ANSWER_MARKER} {d}" for d in descs]
    corpus += prompt_templates() * 8
    return corpus


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1000):
    """A byte-level BPE tokenizer (any text encodes; no unknown token) with pad/bos/eos/image."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS, IMAGE],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS,
                                   eos_token=EOS, extra_special_tokens={"image_token": IMAGE})


def build_processor(tokenizer, cfg: TinyVLMConfig):
    """``LlavaProcessor`` with a CLIP image processor at the tiny size (explicit sizes: no hub)."""
    from transformers import LlavaProcessor
    from transformers.models.clip import CLIPImageProcessorPil  # torchvision-free backend

    ip = CLIPImageProcessorPil(size={"shortest_edge": cfg.image_size},
                               crop_size={"height": cfg.image_size, "width": cfg.image_size})
    return LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=cfg.patch_size,
                          vision_feature_select_strategy="default", image_token=IMAGE,
                          num_additional_image_tokens=1)


def build_model(tokenizer, cfg: TinyVLMConfig):
    """A randomly initialised ``LlavaForConditionalGeneration`` (deterministic under the seed)."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(image_size=cfg.image_size, patch_size=cfg.patch_size,
                              hidden_size=cfg.vision_hidden,
                              intermediate_size=cfg.vision_hidden * 2,
                              num_hidden_layers=cfg.vision_layers,
                              num_attention_heads=cfg.vision_heads,
                              projection_dim=cfg.vision_hidden)
    ids = tokenizer.convert_tokens_to_ids
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.text_hidden,
                       intermediate_size=cfg.text_intermediate,
                       num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
                       num_key_value_heads=cfg.text_heads,
                       max_position_embeddings=cfg.max_positions, pad_token_id=ids(PAD),
                       bos_token_id=ids(BOS), eos_token_id=ids(EOS),
                       tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=ids(IMAGE),
                         vision_feature_layer=-1, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu")
    torch.manual_seed(cfg.seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = ids(PAD)
    model.generation_config.eos_token_id = ids(EOS)
    model.generation_config.bos_token_id = ids(BOS)
    return model


def build_tiny_vlm(texts: Iterable[str], cfg: TinyVLMConfig | None = None):
    """(model, processor) of the tiny default, with a tokenizer trained on ``texts``."""
    cfg = cfg or TinyVLMConfig()
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    return build_model(tokenizer, cfg), build_processor(tokenizer, cfg)
