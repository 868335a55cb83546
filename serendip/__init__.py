"""Serendip: a fine-tuned multimodal LLM steering a recommender toward serendipitous items.

The public face (issue 13). Every stage has a function on tables and an entry on a work
directory, with one argument order: inputs…, output dir, config, keyword-only extras::

    from serendip import (ClusterConfig, CurationConfig, FinetuneConfig, build_cluster_tree,
                          cluster_stage, curate, curate_stage, finetune, finetune_stage,
                          ClusterPredictor, score_items, train_retriever, match_rate, recall)

==========================  ==========================================  ==============
paper step                   on tables / objects                        on a work dir
==========================  ==========================================  ==============
cluster tree (§2)            ``build_cluster_tree`` (ClusterConfig,      ``cluster_stage``
                             EmbeddingConfig)
serendipitous pairs (§2)     ``curate`` (CurationConfig, PromptConfig)   ``curate_stage``
MLLM fine-tuning (§2, §3.1)  ``finetune`` (FinetuneConfig)               ``finetune_stage``
controlled generation (§2)   ``ClusterPredictor``
corpus inference (§3.2)      ``score_items`` (ScoringConfig)             ``score_items``
sequence retriever (§2)      ``train_retriever`` (RetrieverConfig)       ``retriever_stage``
offline metrics (§3.1)       ``match_rate``, ``recall``, ``recall_at_k`` ``evaluate_stage``
==========================  ==========================================  ==============

Sections are those of the paper, "Serendipitous Recommendation with Multimodal LLM".

Names are loaded lazily (PEP 562), so ``import serendip`` (and ``serendip --help``) stays
instant: torch, pandas and scikit-learn load on first use of a name that needs them. The core
library (everything but ``serendip.platform``) imports no platform SDK, so every stage runs and
tests without KFP, KServe, MLflow or Feast installed; stages log to a
:class:`~serendip.tracking.Tracker` passed in (MLflow's lives in ``serendip.platform``).
"""

from __future__ import annotations

import importlib
from typing import Any

from serendip.errors import ConfigError, SchemaError, SerendipError

__version__ = "0.1.0"

#: public name → the module that defines it (imported on first access)
_LAZY: dict[str, str] = {
    # cluster tree (paper §2)
    "ClusterConfig": "serendip.tree",
    "ClusterTree": "serendip.tree",
    "build_cluster_tree": "serendip.tree",
    "cluster_stage": "serendip.tree",
    "EmbeddingConfig": "serendip.embeddings",
    # serendipitous pairs (§2)
    "CurationConfig": "serendip.curation",
    "CurationResult": "serendip.curation",
    "serendipitous_pairs": "serendip.curation",
    "curate": "serendip.curation",
    "curate_stage": "serendip.curation",
    "PromptConfig": "serendip.prompts",
    # MLLM fine-tuning (§2, prompts §3.1)
    "FinetuneConfig": "serendip.mllm.config",
    "FinetuneResult": "serendip.mllm.config",
    "finetune": "serendip.mllm.train",
    "finetune_stage": "serendip.mllm.stage",
    # controlled generation (§2) and corpus inference (§3.2)
    "ClusterPredictor": "serendip.mllm.inference",
    "ScoringConfig": "serendip.scoring",
    "score_items": "serendip.scoring",
    # the sequence retriever below the cluster (§2)
    "RetrieverConfig": "serendip.retriever.train",
    "train_retriever": "serendip.retriever.train",
    "retriever_stage": "serendip.retriever.train",
    "Retriever": "serendip.retriever.index",
    # offline metrics (§3.1)
    "match_rate": "serendip.metrics",
    "recall": "serendip.metrics",
    "recall_at_k": "serendip.metrics",
    "evaluate_stage": "serendip.evaluation.offline",
    # settings: one loader for every config (YAML + KEY=VALUE → nested dataclasses)
    "load_config": "serendip.config",
    # tracking interface
    "Tracker": "serendip.tracking",
    "NullTracker": "serendip.tracking",
}

__all__ = ["ConfigError", "SchemaError", "SerendipError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """PEP 562: import the defining module on first access and cache the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'serendip' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

