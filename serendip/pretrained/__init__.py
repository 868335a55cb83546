"""Genuinely pretrained networks loaded offline from registry packages (no hub, no download).

* :mod:`serendip.pretrained.efficientnet` — EfficientNet-Lite0 (ImageNet) as a transformers
  ``EfficientNetModel``.
"""
