"""The ``scoring`` pipeline: place new items in the tree → score the popular corpus in
``num_shards`` parallel shards (``dsl.ParallelFor``, one pod with one GPU each on Kubernetes) → merge →
materialize into Feast.

Incremental and resumable when ``state_dir`` is a persistent volume: each shard keeps its
committed chunks and previous results there, so a rerun scores only new or changed items and a
retried pod resumes where the killed one stopped.

``score-shard`` requests a GPU and runs in the CUDA image. It reads ``@champion`` from the MLflow
registry and ``materialize`` writes the online store — state outside their inputs — so neither is
served from the KFP cache, and both are retried (``set_retry``) as they talk to those services.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset

from serendip.platform.kfp.components import RETRY
from serendip.platform.kfp.components.scoring import (
    assign_new,
    materialize,
    merge_scores,
    plan_shards,
    score_shard,
)


class Outputs(NamedTuple):
    scores: Dataset


@dsl.pipeline(name="serendip-scoring",
              description="Batch-score the popular corpus with the @champion MLLM and "
                          "materialize item features into Feast.")
def scoring_pipeline(data_uri: str, tree_uri: str = "", mlflow_uri: str = "",
                     model_uri: str = "models:/serendip-mllm@champion", state_dir: str = "",
                     coverage: float = 0.8, num_shards: int = 2, batch_size: int = 32,
                     chunk_size: int = 256, k: int = 3, feature_root: str = "") -> Outputs:
    data = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=False)
    tree_src = dsl.importer(artifact_uri=tree_uri, artifact_class=Dataset, reimport=False)
    placed = assign_new(data=data.output, tree=tree_src.output)
    plan = plan_shards(num_shards=num_shards)
    with dsl.ParallelFor(plan.output) as shard:
        part = score_shard(data=data.output, tree=placed.outputs["placed"], shard=shard,
                           num_shards=num_shards, model_uri=model_uri, mlflow_uri=mlflow_uri,
                           state_dir=state_dir, coverage=coverage, batch_size=batch_size,
                           chunk_size=chunk_size, k=k)
        # a constant: kfp.local cannot resolve pipeline parameters inside a loop's settings
        part.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
        part.set_retry(**RETRY).set_caching_options(False)
    merged = merge_scores(parts=dsl.Collected(part.outputs["scores"]))
    feast = materialize(scores=merged.outputs["scores"], feature_root=feature_root)
    feast.set_retry(**RETRY).set_caching_options(False)
    return Outputs(scores=merged.outputs["scores"])
