"""Sequence retriever (paper §2): a SASRec-style transformer over the user's recent items whose
top-k is restricted to the cluster the MLLM chose."""

from serendip.retriever.index import Retriever, export_torchscript
from serendip.retriever.model import SASRec
from serendip.retriever.train import (
    RetrieverConfig,
    RetrieverResult,
    retriever_stage,
    train_retriever,
    user_sequences,
)

__all__ = ["Retriever", "RetrieverConfig", "RetrieverResult", "SASRec", "export_torchscript",
           "retriever_stage", "train_retriever", "user_sequences"]
