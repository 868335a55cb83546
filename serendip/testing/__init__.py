"""Fixtures shipped with the library for tests and the demo: small synthetic work directories
(scoring, serving) built from the synthetic platform. Not part of the public API."""
