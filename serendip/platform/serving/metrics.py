"""Prometheus metrics of the ``recommend`` transformer, next to KServe's own.

KServe 0.21's model server already serves ``/metrics`` on its REST port (prometheus_client's
default registry) with ``request_predict_seconds{model_name}`` (and pre/post-process)
histograms. The collectors here join that registry, so one scrape of ``/metrics`` shows both:

* ``serendip_recommend_requests_total{model_name, outcome}`` — outcome ``ok``,
  ``client_error`` (HTTP 400) or ``server_error`` (HTTP 500), one per request (batch rows
  count once: one request);
* ``serendip_recommend_phase_seconds{model_name, phase}`` — histogram per call of a phase:
  ``lookup`` (cluster cache miss → feature store), ``mllm`` (items not scored yet, or no known
  cluster), ``retriever`` (top-k inside the cluster);
* ``serendip_cluster_choice_total{model_name, source}`` — where each answered row's cluster
  came from: ``feast``, ``table``, ``cache`` or ``mllm``;
* ``serendip_cluster_cache_lookups_total{model_name, result}`` — ``hit`` / ``miss`` of the
  in-process cluster cache, and ``serendip_cluster_cache_hit_ratio{model_name}`` (hits over
  lookups since start; the counters give the ratio over any window:
  ``rate(..{result="hit"}[5m]) / rate(..[5m])``);
* ``serendip_online_store_errors_total{model_name}`` — feature-store reads that failed (the
  MLLM answered instead).

Triton keeps its own metrics port (``--metrics-port``, ``serendip serve --triton-metrics-port``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# latency buckets from 0.5 ms (a cache hit) to 10 s (a cold MLLM call)
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            10.0)

REQUESTS = Counter("serendip_recommend_requests", "recommend requests by outcome",
                   ["model_name", "outcome"])
PHASE_SECONDS = Histogram("serendip_recommend_phase_seconds",
                          "latency of one phase of a recommend request",
                          ["model_name", "phase"], buckets=_BUCKETS)
CHOICES = Counter("serendip_cluster_choice", "source of the cluster of each answered row",
                  ["model_name", "source"])
CACHE = Counter("serendip_cluster_cache_lookups", "in-process cluster cache lookups",
                ["model_name", "result"])
CACHE_RATIO = Gauge("serendip_cluster_cache_hit_ratio",
                    "cluster cache hits over lookups since the server started", ["model_name"])
STORE_ERRORS = Counter("serendip_online_store_errors",
                       "feature-store reads that failed (answered by the MLLM)", ["model_name"])

OUTCOMES = ("ok", "client_error", "server_error")
PHASES = ("lookup", "mllm", "retriever")
SOURCES = ("feast", "table", "cache", "mllm")


class RecommendMetrics:
    """The collectors bound to one model name (children created up front, so a scrape shows
    zeros before the first request)."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        for o in OUTCOMES:
            REQUESTS.labels(model_name, o)
        for p in PHASES:
            PHASE_SECONDS.labels(model_name, p)
        for s in SOURCES:
            CHOICES.labels(model_name, s)
        for r in ("hit", "miss"):
            CACHE.labels(model_name, r)
        STORE_ERRORS.labels(model_name)
        self._hits = self._lookups = 0

    def phase(self, phase: str, seconds: float) -> None:
        PHASE_SECONDS.labels(self.model_name, phase).observe(seconds)

    def request(self, outcome: str) -> None:
        REQUESTS.labels(self.model_name, outcome).inc()

    def choices(self, sources) -> None:
        for s in sources:
            CHOICES.labels(self.model_name, s).inc()

    def cache(self, hits: int, misses: int) -> None:
        """Cache lookups since the last call (deltas of the cache's own counters)."""
        if hits:
            CACHE.labels(self.model_name, "hit").inc(hits)
        if misses:
            CACHE.labels(self.model_name, "miss").inc(misses)
        self._hits += hits
        self._lookups += hits + misses
        if self._lookups:
            CACHE_RATIO.labels(self.model_name).set(self._hits / self._lookups)

    def store_error(self) -> None:
        STORE_ERRORS.labels(self.model_name).inc()
