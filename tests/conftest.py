"""Shared fixtures: a small synthetic platform built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "1")

try:  # on a loaded 2-core machine torch with 2 threads can be ~200x slower
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

# the serving fixtures (served work directory, mllm/retriever handlers), one copy for all modules
pytest_plugins = ["serving_fixtures"]

SMALL = dict(items=600, users=200, interactions=8000, seed=7, branching=(2, 2, 3, 2))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small synthetic platform on disk (items, interactions, truth/)."""
    from serendip.data.synth import SynthConfig, write_synth

    out = tmp_path_factory.mktemp("synth")
    write_synth(SynthConfig(**SMALL), out)
    return out
