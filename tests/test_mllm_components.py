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

    from components.finetune import evaluate, finetune, promote

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
                      mlflow_uri=mlflow_uri, settings=settings)
        ev = evaluate(data=data.output, tree=data.output, examples=data.output,
                      model=ft.outputs["model"], mlflow_uri=mlflow_uri, k=2)
        return promote(mlflow_uri=mlflow_uri).after(ev).output

    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path / "kfp"), raise_on_error=True)
    task = stage(data_uri=str(wd), mlflow_uri=uri)
    result = json.loads(task.output)
    assert result["promoted"] and result["champion"] == "1"
