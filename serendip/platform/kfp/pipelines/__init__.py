"""KFP v2 pipelines wiring the components: ``training`` and ``scoring``.

``PIPELINES`` maps a name to ``module:function``; ``serendip pipeline compile|run`` uses it.
"""

PIPELINES = {
    "training": "serendip.platform.kfp.pipelines.training:training_pipeline",
    "scoring": "serendip.platform.kfp.pipelines.scoring:scoring_pipeline",
}


def load(name: str):
    """The pipeline function registered under ``name``."""
    import importlib

    from serendip.errors import SerendipError

    if name not in PIPELINES:
        raise SerendipError(f"unknown pipeline {name!r}", field="pipeline",
                            fix=f"use one of {', '.join(PIPELINES)}")
    module, func = PIPELINES[name].split(":")
    return getattr(importlib.import_module(module), func)
