"""Compiled pipelines: valid IR that loads back with the KFP SDK, every knob a parameter, GPU
requests on fine-tuning and scoring (in the CUDA image), sharded scoring, retries on the steps
that talk to services, caching off where a step reads state outside its inputs, the KFP run id
passed to every step that creates MLflow runs."""

import inspect

import pytest
import yaml

from serendip.cli import main


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("ir")
    assert main(["pipeline", "compile", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("name", ["training", "scoring"])
def test_compiled_pipeline_loads_back(compiled, name):
    from kfp import components

    comp = components.load_component_from_file(str(compiled / f"{name}.yaml"))
    assert comp.name == f"serendip-{name}"
    from serendip.platform.kfp import pipelines

    func = pipelines.load(name).pipeline_func
    assert set(comp.component_spec.inputs) == set(inspect.signature(func).parameters)


def _tasks(ir: dict) -> dict:
    tasks = dict(ir["root"]["dag"]["tasks"])
    for comp in ir["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def _executors(ir: dict) -> dict:
    return ir["deploymentSpec"]["executors"]


CHAMPION_READERS = {"training": {"promote", "train-retriever", "export"},
                    "scoring": {"score-shard", "materialize"}}
SERVICE_CLIENTS = {"training": {"finetune", "evaluate", "promote", "train-retriever", "export"},
                   "scoring": {"score-shard", "materialize"}}


@pytest.mark.parametrize("name", ["training", "scoring"])
def test_every_task_runs_in_the_right_image(compiled, name):
    """Issue 12 case 17: the tasks that request nvidia.com/gpu ran on the CPU image."""
    from serendip.platform.kfp.components import GPU_IMAGE, IMAGE

    ir = yaml.safe_load((compiled / f"{name}.yaml").read_text())
    components = ir["components"]
    seen = set()
    for task_name, task in _tasks(ir).items():
        comp = components.get(task["componentRef"]["name"], {})
        if "executorLabel" not in comp:
            continue                                  # a sub-DAG (ParallelFor body)
        container = _executors(ir)[comp["executorLabel"]].get("container")
        if container is None:                         # dsl.importer
            continue
        gpu = container.get("resources", {}).get("accelerator", {}).get("resourceType")
        assert container["image"] == (GPU_IMAGE if gpu == "nvidia.com/gpu" else IMAGE), task_name
        seen.add((task_name, bool(gpu)))
    gpu_tasks = {t for t, g in seen if g}
    assert gpu_tasks == ({"finetune"} if name == "training" else {"score-shard"})
    assert GPU_IMAGE != IMAGE


@pytest.mark.parametrize("name", ["training", "scoring"])
def test_retries_caching_and_kfp_run_id(compiled, name):
    """Issue 17 item 6: retries where a step talks to a service, no cache where it reads
    @champion or the online store, the KFP run id handed to every MLflow-writing step."""
    ir = yaml.safe_load((compiled / f"{name}.yaml").read_text())
    tasks = {k: t for k, t in _tasks(ir).items()
             if "componentRef" in t and not t["componentRef"]["name"].startswith("comp-importer")
             and "executorLabel" in ir["components"][t["componentRef"]["name"]]}
    for task_name, task in tasks.items():
        caching = task.get("cachingOptions", {}).get("enableCache", False)
        assert caching == (task_name not in CHAMPION_READERS[name]), task_name
        retry = task.get("retryPolicy", {})
        if task_name in SERVICE_CLIENTS[name]:
            assert retry.get("maxRetryCount", 0) >= 1, task_name
        else:
            assert not retry, task_name
    if name == "training":
        for task_name in ("finetune", "evaluate", "train-retriever"):
            params = tasks[task_name]["inputs"]["parameters"]
            assert params["kfp_run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
            assert params["kfp_run_name"]["runtimeValue"]["constant"] == \
                "{{$.pipeline_job_name}}"


def test_training_requests_a_gpu_for_finetune(compiled):
    ir = yaml.safe_load((compiled / "training.yaml").read_text())
    tasks = _tasks(ir)
    assert {"cluster", "curate", "finetune", "evaluate", "promote", "train-retriever",
            "export"} <= set(tasks)
    res = _executors(ir)["exec-finetune"]["container"]["resources"]
    assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
    params = ir["root"]["inputDefinitions"]["parameters"]
    for knob in ("branching", "level", "delta", "top_k", "strategy", "n_frames",
                 "use_thumbnail", "finetune_settings", "retriever_settings", "gate_metric"):
        assert knob in params


def test_the_gate_sees_the_retriever_sibling_baseline(compiled):
    """Issue 15: evaluate (whose report the gate reads) gets the trained retriever, so the
    retriever-ranked sibling is among the baselines the MLLM must beat; the retriever trains
    beside the fine-tune, not after the gate."""
    ir = yaml.safe_load((compiled / "training.yaml").read_text())
    tasks = _tasks(ir)
    arts = tasks["evaluate"]["inputs"]["artifacts"]
    assert arts["retriever"]["taskOutputArtifact"]["producerTask"] == "train-retriever"
    assert "train-retriever" in tasks["evaluate"]["dependentTasks"]
    assert "promote" not in tasks["train-retriever"].get("dependentTasks", [])


def test_scoring_fans_out_over_shards_with_gpus(compiled):
    ir = yaml.safe_load((compiled / "scoring.yaml").read_text())
    loops = [c for c in ir["components"].values()
             if "parameterIterator" in c.get("dag", {}).get("tasks", {}).get("score-shard", {})
             or any("parameterIterator" in t for t in c.get("dag", {}).get("tasks", {}).values())]
    root_tasks = ir["root"]["dag"]["tasks"]
    assert any("parameterIterator" in t for t in root_tasks.values()) or loops
    res = _executors(ir)["exec-score-shard"]["container"]["resources"]
    assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert {"materialize", "merge-scores", "assign-new"} <= set(_tasks(ir))


def test_unknown_pipeline_parameter_is_a_clear_error(tmp_path, capsys):
    code = main(["pipeline", "run", "training", "--workdir", str(tmp_path), "--set", "stepz=3"])
    assert code == 2
    assert "unknown parameter(s) ['stepz']" in capsys.readouterr().err


def test_task_log_keeps_everything_and_echoes_one_line_per_task(tmp_path):
    import io

    from serendip.platform.kfp.runner import _TaskLog

    echo = io.StringIO()
    with open(tmp_path / "run.log", "w") as log:
        stream = _TaskLog(log, echo)
        stream.write("12:00:00.000 - INFO - Executing task \x1b[96m'cluster'\x1b[0m\n    {\"big\": ")
        stream.write("\"executor json\"}\n12:00:01.000 - INFO - Task \x1b[96m'cluster'\x1b[0m "
                     "finished with status \x1b[92mSUCCESS\x1b[0m\n")
    lines = echo.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].split()[:2] == ["cluster", "success"]
    assert "executor json" in (tmp_path / "run.log").read_text()


def test_failed_local_run_names_its_log(tmp_path, capsys):
    """No items in the work directory: the first task fails, the error points at the log and
    the terminal shows the log's tail (the component's own error), not kfp.local's JSON."""
    import builtins

    before = builtins.print
    code = main(["pipeline", "run", "training", "--workdir", str(tmp_path)])
    assert builtins.print is before          # kfp.local's per-task print swap is undone
    err = capsys.readouterr().err
    log = tmp_path / "logs" / "pipeline-training.log"
    assert code == 2 and log.exists()
    assert f"read {log}" in err and "last lines of" in err
    assert "Its error: items: not found" in err and "\x1b[" not in err.splitlines()[-1]


def test_no_handler_writes_to_the_closed_pipeline_log(tmp_path, capfd):
    """Issue 12 case 13: kfp.local swaps the root logger's handlers per task; ParallelFor tasks
    in threads interleave the swaps and a handler bound to the pipeline log stayed installed,
    so every later record printed '--- Logging error --- ... I/O operation on closed file'.
    Replayed here with kfp's own context manager, plus a library logger created mid-run."""
    import logging
    import sys

    from kfp.local import logging_utils

    from serendip.platform.kfp.runner import _captured

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with _captured(tmp_path / "run.log"):
        a = logging_utils.local_logger_context()
        b = logging_utils.local_logger_context()
        a.__enter__()
        b.__enter__()                        # thread B saves A's handler as "original"
        a.__exit__(None, None, None)
        b.__exit__(None, None, None)         # ... and restores it: left behind
        lib = logging.getLogger("serendip-test-lib-made-mid-run")
        lib.addHandler(logging.StreamHandler(sys.stderr))
        logging.getLogger("serendip-test").warning("inside the run")
    assert root.handlers == handlers and root.level == level
    logging.getLogger("serendip-test").warning("after the run")
    lib.warning("library after the run")
    err = capfd.readouterr().err
    assert "Logging error" not in err and "closed file" not in err
    assert "library after the run" in err            # re-pointed at the real stderr
    assert "inside the run" in (tmp_path / "run.log").read_text()


def test_one_scoring_component_whose_defaults_score_the_whole_corpus():
    """Issue 13 step 3: ``batch_score`` repeated ``score_shard``'s body for the unsharded case
    and no pipeline used it; ``score_shard``'s defaults (shard 0 of 1) are that case now."""
    from serendip.platform.kfp.components import scoring

    assert not hasattr(scoring, "batch_score")
    inputs = scoring.score_shard.component_spec.inputs
    assert (inputs["shard"].default, inputs["num_shards"].default) == (0, 1)
    assert {n for n in dir(scoring) if not n.startswith("_")} >= {
        "assign_new", "plan_shards", "score_shard", "merge_scores", "materialize"}
