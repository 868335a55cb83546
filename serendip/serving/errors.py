"""Serving errors: the client's mistakes (:class:`~serendip.errors.SerendipError`, HTTP 400 /
gRPC INVALID_ARGUMENT / Triton INVALID_ARG) versus the server's own faults (:class:`ServerFault`,
HTTP 500 / gRPC INTERNAL)."""

from __future__ import annotations

from serendip.errors import SerendipError


class ServerFault(SerendipError):
    """A server-side fault (its feature store, catalogue or models disagree or are down):
    answered as HTTP 500 / gRPC INTERNAL, never as the client's mistake."""


class UnknownCluster(SerendipError):
    """The served retriever does not know a cluster id. A client sending it to ``retriever``
    gets a 400; inside ``recommend`` (a cluster read from Feast) the next cluster is tried."""


def remote_error(model: str, message: str) -> SerendipError:
    """An INVALID_ARG answer of a served model (its message names the input) → the matching
    error: :class:`UnknownCluster` for the retriever's unknown-cluster answer."""
    if "CLUSTER_ID: unknown cluster" in message:
        return UnknownCluster(f"{model}: {message}", field="CLUSTER_ID")
    return SerendipError(f"{model}: {message}")
