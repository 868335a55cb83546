"""``export`` component: the ``@champion`` registry versions → a Triton model repository
(configs + Python backends + weights in numbered version folders), ready for a KServe
InferenceService's ``storageUri``."""

from kfp import dsl
from kfp.dsl import Model, Output

from serendip.platform.kfp.components import COMPONENT_KW


@dsl.component(**COMPONENT_KW)
def export(repository: Output[Model], mlflow_uri: str = "", alias: str = "champion",
           instances: int = 1) -> str:
    """Download ``serendip-mllm@alias`` and ``serendip-retriever@alias`` and lay them out as a
    Triton repository in ``repository``. Returns the exported versions as JSON."""
    import json
    import os
    import tempfile

    from serendip.platform.serving.champions import champion_source
    from serendip.serving.repository import MODELS, export_repository, exported_versions

    if mlflow_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_uri
    scratch = tempfile.mkdtemp(prefix="serendip-export-")
    sources = [champion_source(m, scratch, scratch, alias) for m in MODELS]
    export_repository(sources, repository.path, instances=instances)
    versions = exported_versions(repository.path)
    repository.metadata.update({m: v for m, v in versions.items()})
    return json.dumps(versions, default=str)
