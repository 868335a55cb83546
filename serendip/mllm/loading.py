"""Load any Hugging Face vision-language model from a local directory — never from a hub.

``AutoModelForImageTextToText`` + ``AutoProcessor`` cover the families that ship an
image-text-to-text head. Tested end to end here: LLaVA (the tiny default is a
``LlavaForConditionalGeneration``). Built and run from config in the design probe (DESIGN §7),
but not part of the test suite: Qwen2-VL / Qwen2.5-VL (need ``mm_token_type_ids``, and their
processors a ``video_processor``), Idefics3 / SmolVLM, PaliGemma. Prompts go through the
processor's chat template when it has one, so instruction-tuned checkpoints see their own
format; otherwise one image token per image is prepended to the plain prompt.
"""

from __future__ import annotations

import os
from pathlib import Path

from serendip.errors import ConfigError

TINY = "tiny"


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
    from transformers import AutoModelForImageTextToText, AutoProcessor

    quiet_transformers()
    p = check_local(path)
    if not (p / "config.json").exists():
        raise ConfigError(f"{p} has no config.json", field="base_model",
                          fix="point base_model at a save_pretrained directory")
    try:
        processor = (AutoProcessor.from_pretrained(p, local_files_only=True)
                     if with_processor else None)
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
        return image_token(processor) * n_images + "\n" + prompt + "\n"
    return prompt + "\n"
