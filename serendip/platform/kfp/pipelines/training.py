"""The ``training`` pipeline: cluster → curate → finetune ‖ train retriever → evaluate (against
every cluster-choice baseline, the retriever-ranked sibling included) → promote (gate) →
export the Triton repository of the champions.

The gate (``promote``) moves ``@champion`` only when the challenger is not worse than the
champion and beats the best baseline of the ``evaluate`` step's report by more than
``gate_margin`` (``force_promote`` overrides, recorded on the version).

Every knob of every stage is a pipeline parameter; the ``*_settings`` dicts carry the long
tail (any field of ClusterConfig, CurationConfig, FinetuneConfig, RetrieverConfig).
Fine-tuning requests ``gpus`` GPUs on Kubernetes (ignored by ``kfp.local``) and runs in the CUDA
image; with more than one it trains data-parallel under torchrun, one process per GPU
(serendip.mllm.distributed).

Platform conventions: the steps that talk to the MLflow tracking server are retried
(``set_retry``); ``promote``, ``train-retriever`` (its gate) and ``export`` read the registry's
``@champion`` — state outside their inputs — so they are never served from the KFP cache; every
MLflow run and model version a step creates is tagged with the KFP run id and name.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Model

from serendip.platform.kfp.components import RETRY
from serendip.platform.kfp.components.cluster import cluster
from serendip.platform.kfp.components.curate import curate
from serendip.platform.kfp.components.export import export
from serendip.platform.kfp.components.finetune import evaluate, finetune, promote
from serendip.platform.kfp.components.retriever import train_retriever

GPU = "nvidia.com/gpu"
RUN = dict(kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)


class Outputs(NamedTuple):
    tree: Dataset
    examples: Dataset
    model: Model
    retriever: Model
    repository: Model
    offline_report: Markdown        # held-out metrics vs the baselines (evaluate's table)


@dsl.pipeline(name="serendip-training",
              description="Cluster tree, serendipitous curation, MLLM fine-tuning with a "
                          "promotion gate, sequence retriever, Triton export.")
def training_pipeline(data_uri: str, mlflow_uri: str = "",
                      branching: str = "auto", cluster_settings: dict = {},
                      level: int = 3, delta: int = 1, top_k: int = 10,
                      strategy: str = "auto", n_frames: int = 0, use_thumbnail: bool = False,
                      curation_settings: dict = {}, finetune_settings: dict = {},
                      eval_k: int = 5, gate_metric: str = "recall_constrained",
                      gate_margin: float = 0.0, force_promote: bool = False,
                      retriever_settings: dict = {}, export_instances: int = 1,
                      gpus: int = 1) -> Outputs:
    data = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=False)
    data.set_display_name("platform data")
    tree = cluster(data=data.output, branching=branching, settings=cluster_settings)
    examples = curate(data=data.output, tree=tree.outputs["tree"], level=level, delta=delta,
                      top_k=top_k, strategy=strategy, n_frames=n_frames,
                      use_thumbnail=use_thumbnail, settings=curation_settings)
    model = finetune(data=data.output, tree=tree.outputs["tree"],
                     examples=examples.outputs["examples"], mlflow_uri=mlflow_uri,
                     settings=finetune_settings, **RUN)
    model.set_accelerator_type(GPU).set_accelerator_limit(gpus)
    model.set_memory_request("8G").set_cpu_request("4")
    # the retriever trains beside the fine-tune (it needs only the tree), so evaluate can rank
    # its baseline too: the retriever-ranked sibling
    retr = train_retriever(data=data.output, tree=tree.outputs["tree"], mlflow_uri=mlflow_uri,
                           settings=retriever_settings, force=force_promote, **RUN)
    ev = evaluate(data=data.output, tree=tree.outputs["tree"],
                  examples=examples.outputs["examples"], model=model.outputs["model"],
                  mlflow_uri=mlflow_uri, k=eval_k, retriever=retr.outputs["retriever"], **RUN)
    # the gate beats evaluate's baselines (random sibling, transition statistics, retriever-
    # ranked sibling) on the same held-out cases (issue 15), not only the previous champion
    gate = promote(mlflow_uri=mlflow_uri, metric=gate_metric, baselines=ev.outputs["Output"],
                   margin=gate_margin, force=force_promote)
    repo = export(mlflow_uri=mlflow_uri, instances=export_instances).after(gate, retr)
    for task in (model, ev, gate, retr, repo):          # they talk to the MLflow server
        task.set_retry(**RETRY)
    for task in (gate, retr, repo):                     # they read @champion
        task.set_caching_options(False)
    return Outputs(tree=tree.outputs["tree"], examples=examples.outputs["examples"],
                   model=model.outputs["model"], retriever=retr.outputs["retriever"],
                   repository=repo.outputs["repository"], offline_report=ev.outputs["report"])
