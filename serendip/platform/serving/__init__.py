"""Serving adapters: the Triton launcher (:mod:`.triton`), the KServe servers (:mod:`.kserve_server`:
recommend transformer, fallback predictors, loopback ModelServer), cluster lookups
(:mod:`.lookup`), the v2 client (:mod:`.client`) and ``serendip serve`` (:mod:`.server`).
Import the submodules directly; this package imports nothing heavy."""
