"""The context item's serendipitous cluster as the recommend flow sees it: where it came from,
the row's alternatives, and the in-process item → cluster cache."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ClusterChoice:
    """The context item's serendipitous cluster, and where it came from."""

    cluster_id: str
    description: str
    source: str                  # feast | table | cache | mllm
    # the row's next clusters (id, description), best first: tried when the served retriever
    # does not know ``cluster_id`` (tree rebuilt, retriever not re-exported yet)
    alternatives: tuple[tuple[str, str], ...] = ()

    def candidates(self) -> list[tuple[str, str]]:
        return [(self.cluster_id, self.description), *self.alternatives]



class ClusterCache:
    """In-process item → cluster cache (LRU + TTL): one Feast read per context item per TTL,
    not per request (per-request feature reads dominated serving latency). The TTL
    bounds staleness after a re-scoring run."""

    def __init__(self, size: int = 100_000, ttl_s: float = 300.0):
        self.size, self.ttl_s = size, ttl_s
        self._d: OrderedDict[str, tuple[float, ClusterChoice]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, item_id: str) -> ClusterChoice | None:
        e = self._d.get(item_id)
        if e is None or time.monotonic() - e[0] > self.ttl_s:
            self.misses += 1
            if e is not None:
                del self._d[item_id]
            return None
        self._d.move_to_end(item_id)
        self.hits += 1
        return e[1]

    def put(self, item_id: str, choice: ClusterChoice) -> None:
        self._d[item_id] = (time.monotonic(), choice)
        self._d.move_to_end(item_id)
        while len(self._d) > self.size:
            self._d.popitem(last=False)



def top_choice(cluster_ids: Sequence, descriptions: Sequence, source: str) -> ClusterChoice | None:
    """The best-scored cluster of a feature-store / table row (lists ordered best first), with
    the row's other clusters as alternatives."""
    descs = list(descriptions or [])
    pairs = [(str(c), str(descs[j]) if j < len(descs) and descs[j] is not None else "")
             for j, c in enumerate(cluster_ids or []) if c]
    if not pairs:
        return None
    return ClusterChoice(pairs[0][0], pairs[0][1], source, tuple(pairs[1:]))
