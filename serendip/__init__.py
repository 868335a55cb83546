"""Serendip: a fine-tuned multimodal LLM steering a recommender toward serendipitous items.

The core library (everything but ``serendip.platform``) imports no platform SDK, so every stage
runs and tests without KFP, KServe, MLflow or Feast installed.
"""

__version__ = "0.1.0"

from serendip.errors import SchemaError, SerendipError  # noqa: E402

__all__ = ["SerendipError", "SchemaError", "__version__"]
