"""Triton Python backend for ``retriever``: a thin shell over
``serendip.serving.handlers.RetrieverHandler`` (weights in ``<version>/weights``)."""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import torch

        from serendip.serving.handlers import RetrieverHandler
        from serendip.serving.triton_backend import model_parameters

        params = model_parameters(json.loads(args["model_config"]))
        torch.set_num_threads(int(params.get("torch_threads") or 1))
        weights = Path(args["model_repository"]) / args["model_version"] / "weights"
        self.handler = RetrieverHandler.load(weights)
        pb_utils.Logger.log_info(f"retriever: loaded {weights}")

    def execute(self, requests):
        from serendip.serving.triton_backend import triton_execute

        return triton_execute(self.handler, requests, pb_utils)
