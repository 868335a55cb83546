"""The finetune → evaluate → promote KFP components run with ``kfp.local`` on a work directory
built from the ground truth (slow: three subprocesses importing torch and MLflow)."""

import json

import pytest
from mllm_truth import TEST_TINY, write_truth_workdir

from serendip.prompts import PromptConfig

kfp = pytest.importorskip("kfp")


@pytest.mark.slow
def test_components_in_a_local_pipeline(synth_dir, tmp_path, monkeypatch):
    from kfp import dsl, local
    from kfp.dsl import Dataset

    from serendip.platform.kfp.components.finetune import evaluate, finetune, promote

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    wd = write_truth_workdir(synth_dir, tmp_path / "wd", PromptConfig("video", 1), n_items=60)
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    (tmp_path / "mlflow").mkdir()
    settings = {"steps": 4, "batch_size": 4, "eval_every": 2, "eval_max_examples": 4,
                **{f"tiny.{k}": v for k, v in TEST_TINY.items()}}

    @dsl.pipeline(name="mllm-stage")
    def stage(data_uri: str, mlflow_uri: str) -> str:
        data = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset, reimport=False)
        ft = finetune(data=data.output, tree=data.output, examples=data.output,
                      mlflow_uri=mlflow_uri, settings=settings,
                      kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                      kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
        ev = evaluate(data=data.output, tree=data.output, examples=data.output,
                      model=ft.outputs["model"], mlflow_uri=mlflow_uri, k=2)
        # the gate gets evaluate's baselines (issue 15); 4 steps rarely beat them: forced
        return promote(mlflow_uri=mlflow_uri, baselines=ev.outputs["Output"], force=True).output

    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path / "kfp"), raise_on_error=True)
    task = stage(data_uri=str(wd), mlflow_uri=uri)
    result = json.loads(task.output)
    assert result["promoted"] and result["champion"] == "1"
    assert result["baseline"]["method"] in ("most_frequent", "random_sibling")
    assert result["baseline"]["source"].startswith("evaluate step")
    # issue 17 item 6: the KFP run (kfp.local resolves the placeholders) is on the version,
    # its MLflow run, and the run names its training tables as dataset inputs
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version("serendip-mllm", "1")
    assert mv.tags["kfp_run_id"] and not mv.tags["kfp_run_id"].startswith("{{")
    assert mv.tags["kfp_run_name"].startswith("mllm-stage")
    run = client.get_run(mv.run_id)
    assert run.data.tags["kfp_run_id"] == mv.tags["kfp_run_id"]
    assert {"examples", "items"} <= {d.dataset.name for d in run.inputs.dataset_inputs}
