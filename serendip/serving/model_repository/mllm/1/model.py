"""Triton Python backend for ``mllm``: a thin shell over ``serendip.serving.handlers.MllmHandler``.

Runs under the first ``python3`` on Triton's PATH (the numpy<2 ``.venv-triton``, where
``serendip`` is installed); weights are read from ``<version>/weights`` (``serendip export``).
"""

import os
from pathlib import Path

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import json

        import torch

        from serendip.serving.handlers import MllmHandler
        from serendip.serving.triton_backend import model_parameters

        params = model_parameters(json.loads(args["model_config"]))
        torch.set_num_threads(int(params.get("torch_threads") or 1))
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        weights = Path(args["model_repository"]) / args["model_version"] / "weights"
        self.handler = MllmHandler.load(weights, batch_size=8)
        pb_utils.Logger.log_info(f"mllm: loaded {weights} (model version "
                                 f"{self.handler.model_version})")

    def execute(self, requests):
        from serendip.serving.triton_backend import triton_execute

        return triton_execute(self.handler, requests, pb_utils)
