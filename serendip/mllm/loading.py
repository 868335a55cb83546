"""Load any Hugging Face vision-language model from a local directory — never from a hub.

``AutoModelForImageTextToText`` + ``AutoProcessor`` cover the families that ship an
image-text-to-text head. Tested end to end (fine-tune → constrained predict → export → the
``mllm`` serving handler, tests/test_mllm_families.py): LLaVA (the tiny default), Qwen2-VL
(needs ``mm_token_type_ids``), Idefics3 and FastVLM (a CNN tower; the pretrained base of
:mod:`.base`). Prompts go through the processor's chat template when it has one, so
instruction-tuned checkpoints see their own format; otherwise one image token per image is
prepended to the plain prompt.

Processors with a video slot (Qwen2-VL, SmolVLM, ...) cannot be built without torchvision
(their video processor needs it, and the class check rejects ``None``) and so cannot be saved
or reloaded either. :func:`image_only_processor_class` derives an image-only subclass
(``ImageOnly<Name>``) that builds, saves and reloads; :func:`load_processor` registers it
before ``AutoProcessor`` reads a directory that names it.
"""

from __future__ import annotations

import os
from pathlib import Path

from serendip.errors import ConfigError

TINY = "tiny"
IMAGE_ONLY = "ImageOnly"
_IMAGE_ONLY_CLASSES: dict[str, type] = {}


def image_only_processor_class(base: type) -> type:
    """``ImageOnly<base>``: ``base`` (a processor with image, tokenizer and video slots)
    without its video slot — same text/image behaviour, builds and saves without torchvision,
    and reloads through :func:`load_processor`. Registered with ``AutoProcessor`` (under a
    private config class, so no real model type is remapped)."""
    name = IMAGE_ONLY + base.__name__
    cls = _IMAGE_ONLY_CLASSES.get(name)
    if cls is not None:
        return cls
    from transformers import AutoProcessor, PreTrainedConfig

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        base.__init__(self, image_processor, tokenizer, None, chat_template=chat_template,
                      **kwargs)

    cls = type(name, (base,), {"__init__": __init__, "__module__": __name__,
                               "__doc__": f"{base.__name__} without its video slot."})
    key = type(f"_{name}Config", (PreTrainedConfig,), {"model_type": f"serendip-{name}"})
    AutoProcessor.register(key, cls, exist_ok=True)
    _IMAGE_ONLY_CLASSES[name] = cls
    return cls


def load_processor(path: str | os.PathLike):
    """``AutoProcessor.from_pretrained(path)`` (local files only), registering the image-only
    class the directory names, if any."""
    import json

    import transformers
    from transformers import AutoProcessor

    cfg = Path(path) / "processor_config.json"
    if cfg.is_file():
        name = str(json.loads(cfg.read_text()).get("processor_class") or "")
        base = getattr(transformers, name[len(IMAGE_ONLY):], None) \
            if name.startswith(IMAGE_ONLY) else None
        if base is not None:
            image_only_processor_class(base)
    return AutoProcessor.from_pretrained(path, local_files_only=True)


def quiet_transformers() -> None:
    """No progress bars or advisory warnings from transformers in our logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def check_local(path: str | os.PathLike, field: str = "base_model") -> Path:
    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{str(path)!r} is not a local model directory", field=field,
                          fix="give a directory saved with save_pretrained (config.json + "
                              "safetensors + processor files), or 'tiny' for the offline default;"
                              " hub ids are not fetched")
    return p


def load_base(path: str | os.PathLike, dtype: str = "float32", with_processor: bool = True):
    """(model, processor) of a VLM saved under ``path`` (local files only); the processor is
    None when ``with_processor`` is false (a weights-only directory)."""
    import torch
    from transformers import AutoModelForImageTextToText

    quiet_transformers()
    p = check_local(path)
    if not (p / "config.json").exists():
        raise ConfigError(f"{p} has no config.json", field="base_model",
                          fix="point base_model at a save_pretrained directory")
    try:
        processor = load_processor(p) if with_processor else None
        model = AutoModelForImageTextToText.from_pretrained(
            p, local_files_only=True, dtype=getattr(torch, dtype))
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"cannot load a vision-language model from {p}: {e}",
                          field="base_model",
                          fix="use a model with an image-text-to-text head (LLaVA, Qwen2-VL, "
                              "Idefics3/SmolVLM, PaliGemma) saved locally") from None
    if processor is not None:
        tok = tokenizer_of(processor)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
    return model, processor


def tokenizer_of(processor):
    return getattr(processor, "tokenizer", processor)


def image_token(processor) -> str:
    tok = getattr(processor, "image_token", None)
    if not tok:
        raise ConfigError("the processor has no image token", field="base_model",
                          fix="use a vision-language processor (it must define image_token)")
    return tok


def format_prompt(processor, prompt: str, n_images: int) -> str:
    """The prompt text with the processor's image placeholder once per image.

    Chat-templated processors get a user turn with ``n_images`` image parts and the
    generation prompt; others get ``<image>``×n, a newline and the prompt.
    """
    if getattr(processor, "chat_template", None):
        content = [{"type": "image"} for _ in range(n_images)]
        content.append({"type": "text", "text": prompt})
        return processor.apply_chat_template([{"role": "user", "content": content}],
                                             add_generation_prompt=True, tokenize=False)
    if n_images:
        return _image_placeholder(processor) * n_images + "\n" + prompt + "\n"
    return prompt + "\n"


VISION_SPAN = ("<|vision_start|>", "<|vision_end|>")


def _image_placeholder(processor) -> str:
    """One image's placeholder: the image token, inside the vision span for tokenizers that
    have one (the Qwen-VL families: their M-RoPE positions take adjacent image tokens for one
    image, so images must be delimited as the family's own template does)."""
    tok = image_token(processor)
    tokenizer = tokenizer_of(processor)
    key = len(tokenizer)
    cached = getattr(tokenizer, "_serendip_vision_span", None)
    if cached is None or cached[0] != key:  # get_vocab() copies the vocabulary: once per tokenizer
        vocab = tokenizer.get_vocab()
        cached = (key, all(t in vocab for t in VISION_SPAN))
        tokenizer._serendip_vision_span = cached
    return VISION_SPAN[0] + tok + VISION_SPAN[1] if cached[1] else tok
