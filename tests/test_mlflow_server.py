"""Issue 17 item 2: the registry flow against a real MLflow tracking server over HTTP, exactly
as in production (``MLFLOW_TRACKING_URI=http://HOST:PORT``, artifacts served by the server):
fine-tune → register → @challenger → gate → @champion → export by
``models:/serendip-mllm@champion``, the same for the retriever; two clients registering at once;
the server stopping mid-run. Also issue 17 item 6 (KFP run id tags, dataset inputs).

The server (``serendip/platform/mlflow_server.py``) binds 127.0.0.1 on a free port with its own sqlite
store and artifact root, and is stopped by its PID (process group) — once per module."""

from __future__ import annotations

import json

import pytest
from mllm_truth import TEST_TINY, write_truth_workdir

from serendip import cli
from serendip.mllm.models import load_predictor
from serendip.prompts import PromptConfig

pytest.importorskip("mlflow")
from serendip.platform import registry  # noqa: E402
from serendip.platform.mlflow_server import start_mlflow_server  # noqa: E402

TINY_SETS = sum((["--set", f"tiny.{k}={v}"] for k, v in TEST_TINY.items()), [])
FINETUNE = ["--quiet", "--set", "steps=16", "--set", "batch_size=8", "--set", "eval_every=8",
            "--set", "eval_max_examples=16", "--set", "save_every=16", *TINY_SETS]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield srv
    srv.stop()
    assert srv.proc.poll() is not None


@pytest.fixture(scope="module")
def flow(server, synth_dir, tmp_path_factory):
    """The production flow through the CLI against the server; returns what it made."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", server.uri)
    mp.setenv("SERENDIP_KFP_RUN_ID", "kfp-run-0001")       # as the KFP components set it
    mp.setenv("SERENDIP_KFP_RUN_NAME", "serendip-training-0001")
    wd = write_truth_workdir(synth_dir, tmp_path_factory.mktemp("remote") / "wd",
                             PromptConfig("video", 2), n_items=96)
    out = {"wd": wd}
    try:
        import io
        from contextlib import redirect_stdout

        def run(argv):
            buf = io.StringIO()
            with redirect_stdout(buf):
                code = cli.main(argv)
            assert code == 0, argv
            return buf.getvalue()

        out["finetune"] = json.loads(run(["finetune", "--workdir", str(wd), "--run-name",
                                          "remote", *FINETUNE]))
        out["promote"] = run(["promote", "--workdir", str(wd), "--force"])  # gate: test_gate
        out["retriever"] = json.loads(run(["train-retriever", "--workdir", str(wd), "--set",
                                           "epochs=1", "--quiet"]))
        # one epoch may not beat in-cluster popularity (the gate's subject is test_gate)
        run(["promote", "--workdir", str(wd), "--name", "serendip-retriever", "--force"])
        out["export"] = run(["export", "--workdir", str(wd), "--source", "registry",
                             "--out", str(wd / "repo")])
        yield out
    finally:
        mp.undo()


@pytest.fixture
def remote(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    return server


def test_flow_registers_gates_and_exports_over_http(flow, remote):
    wd = flow["wd"]
    assert registry.setup(wd) == remote.uri
    assert flow["finetune"]["registered_version"] == "1"
    assert registry.alias_version(registry.MLLM, "challenger") == "1"
    assert registry.alias_version(registry.MLLM, "champion") == "1"
    assert flow["retriever"]["registry"]["version"] == "1"
    assert registry.alias_version("serendip-retriever", "champion") == "1"
    # the export read both champions from the server (models:/...@champion)
    assert "models:/serendip-mllm@champion (v1)" in flow["export"]
    assert "models:/serendip-retriever@champion (v1)" in flow["export"]
    assert (wd / "repo" / "mllm" / "1").is_dir() and (wd / "repo" / "retriever" / "1").is_dir()
    predictor = load_predictor(f"models:/{registry.MLLM}@champion", wd)
    assert predictor.model_version == "serendip-mllm/v1"
    # nothing of the registry lives in the work dir: store and artifacts are the server's
    assert not (wd / "mlflow").exists() and not (wd / "mlruns").exists()
    assert any((remote.root / "artifacts").rglob("serendip.json"))


def test_kfp_run_id_and_dataset_inputs_recorded(flow, remote):
    """Issue 17 item 6: every MLflow run and model version carries the KFP run id; the
    training tables are the runs' dataset inputs, so a version names its data."""
    from mlflow import MlflowClient

    registry.setup(flow["wd"])
    client = MlflowClient()
    for name in (registry.MLLM, "serendip-retriever"):
        mv = client.get_model_version(name, "1")
        assert mv.tags["kfp_run_id"] == "kfp-run-0001", name
        assert mv.tags["kfp_run_name"] == "serendip-training-0001"
        run = client.get_run(mv.run_id)
        assert run.data.tags["kfp_run_id"] == "kfp-run-0001"
        inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
        expected = ({"examples", "clusters", "item_clusters", "items"} if name == registry.MLLM
                    else {"interactions", "item_clusters"})
        assert expected <= set(inputs), (name, set(inputs))
        ex = next(iter(inputs.values()))
        assert ex.dataset.digest and any(t.key == "mlflow.data.context" and t.value == "training"
                                         for t in ex.tags)


def test_two_clients_registering_at_once_get_distinct_versions(flow, remote):
    """Two clients (threads with their own MLflow runs: the fluent run stack is per thread)
    register the same model name at the same moment through the production code path."""
    import threading

    from mlflow import MlflowClient

    wd, model_dir = flow["wd"], flow["finetune"]["model_dir"]
    registry.setup(wd)
    got, errors = {}, []
    barrier = threading.Barrier(2)

    def client_run(who: str) -> None:
        try:
            with registry.start_run("serendip-mllm", wd, run_name=who):
                barrier.wait(timeout=60)
                got[who] = registry.register_mllm(
                    model_dir, metrics={"recall_constrained": 0.5, "client": who}, workdir=wd)
        except Exception as e:  # reported below, with the thread's name
            errors.append((who, e))

    threads = [threading.Thread(target=client_run, args=(w,)) for w in ("client-a", "client-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(set(got.values())) == 2 and not set(got.values()) & {"1"}
    client = MlflowClient()
    for who, version in got.items():                      # each version is its own client's
        mv = client.get_model_version(registry.MLLM, version)
        assert mv.tags["client"] == who
        assert client.get_run(mv.run_id).info.run_name == who
    challenger = registry.alias_version(registry.MLLM, "challenger")
    assert challenger in got.values()                    # one of them, whole
    aliases = client.get_registered_model(registry.MLLM).aliases
    assert aliases["challenger"] == challenger and aliases["champion"] == "1"


def test_server_stopping_mid_run_is_one_line(flow, remote, monkeypatch, capsys):
    """Last in the module: it stops the server."""
    from serendip.errors import ServiceError

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    wd = flow["wd"]
    with pytest.raises(ServiceError, match="did not answer"):
        with registry.start_run("serendip-mllm", wd, run_name="dies"):
            registry.log_metrics({"recall": 0.1}, step=1)
            remote.stop(kill=True)                       # the server dies mid-run
            registry.log_metrics({"recall": 0.2}, step=2)
    import mlflow

    assert mlflow.active_run() is None                   # no run left dangling in-process
    for argv in (["promote", "--workdir", str(wd)],
                 ["score", "--workdir", str(wd), "--no-feast"],
                 ["export", "--workdir", str(wd), "--source", "registry"]):
        code = cli.main(argv)
        err = capsys.readouterr().err
        assert code == 3, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert f"MLFLOW_TRACKING_URI: the MLflow tracking server at {remote.uri}" in err
