"""MLflow registry adapter: the store lives in the work dir, save → register → load by
``models:/serendip-mllm@champion`` gives identical outputs, and the promotion gate refuses a
worse challenger."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mllm_truth import trained_tiny

from serendip import cli
from serendip.mllm.data import split
from serendip.mllm.inference import ClusterPredictor
from serendip.mllm.models import load_predictor

pytest.importorskip("mlflow")
from serendip.platform import registry  # noqa: E402


@pytest.fixture(scope="module")
def store(synth_dir, tmp_path_factory):
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    res, examples, *_ = trained_tiny(synth_dir, tmp_path_factory.mktemp("mllm"))
    wd = tmp_path_factory.mktemp("wd")
    yield wd, res, examples
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


def _with_baseline(metrics: dict) -> dict:
    """Registration metrics with a recorded baseline below the recall (the gate also needs
    the challenger to beat its best baseline; tests/test_gate.py covers that side)."""
    return {**metrics, "baseline_random_sibling_recall": metrics["recall_constrained"] - 0.2}


def _inputs(examples, n=4):
    test = split(examples, "test").slice(0, n)
    return [{"title": "t", "context_description": "d", "images": imgs}
            for imgs in test.column("images").to_pylist()]


def test_tracking_uri_defaults_to_the_workdir_and_follows_the_env(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = registry.setup(tmp_path)
    assert uri == f"sqlite:///{(tmp_path / 'mlflow' / 'mlflow.db').resolve()}"
    other = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    assert registry.setup(tmp_path) == other
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "1"


def test_register_then_load_champion_gives_identical_outputs(store, monkeypatch):
    wd, res, examples = store
    monkeypatch.chdir(wd)
    with registry.start_run("serendip-mllm", wd, run_name="t", params={"a": {"b": 1}}) as run:
        registry.log_metrics({"recall": 0.5, "step": 3, "flag": True}, step=1)
        version = registry.register_mllm(res.model_dir, metrics=_with_baseline(res.metrics),
                                         workdir=wd)
    assert version == "1"
    assert registry.alias_version(registry.MLLM, "challenger") == "1"
    first = registry.promote(workdir=wd)
    assert first.promoted and first.champion_after == "1"

    loaded = load_predictor(f"models:/{registry.MLLM}@champion", wd)
    assert loaded.model_version == "serendip-mllm/v1"
    direct = ClusterPredictor.load(res.model_dir)
    inputs = _inputs(examples)
    for k in (1, 3):
        a = direct.predict(inputs, k=k)
        b = loaded.predict(inputs, k=k)
        assert [[(p.cluster_id, p.description, p.score) for p in ps] for ps in a] == \
               [[(p.cluster_id, p.description, p.score) for p in ps] for ps in b]

    import mlflow
    import pandas as pd

    pyfunc = mlflow.pyfunc.load_model(f"models:/{registry.MLLM}@champion")
    df = pyfunc.predict(pd.DataFrame(inputs), params={"k": 2})
    assert list(df.columns) == ["input_index", "rank", "cluster_id", "description", "score"]
    expected = direct.predict(inputs, k=2)
    assert df["cluster_id"].tolist() == [p.cluster_id for ps in expected for p in ps]
    # params and per-step metrics were logged; artifacts stayed inside the work dir
    client = mlflow.MlflowClient()
    data = client.get_run(run.info.run_id).data
    assert data.params["a.b"] == "1" and data.metrics["recall"] == 0.5
    assert client.get_metric_history(run.info.run_id, "recall")[0].step == 1
    assert (wd / "mlflow" / "artifacts").is_dir() and not (wd / "mlruns").exists()


def test_gate_refuses_a_worse_challenger(store, monkeypatch, capsys):
    wd, res, _ = store
    monkeypatch.chdir(wd)
    base = res.metrics["recall_constrained"]
    with registry.start_run("serendip-mllm", wd, run_name="worse"):
        worse = registry.register_mllm(res.model_dir,
                                       metrics=_with_baseline({**res.metrics,
                                                               "recall_constrained": base - 0.1}),
                                       workdir=wd)
    champion = registry.alias_version(registry.MLLM, "champion")
    refused = registry.promote(workdir=wd)
    assert not refused.promoted and "refused" in refused.message
    assert refused.challenger == worse and refused.champion_after == champion
    assert registry.alias_version(registry.MLLM, "champion") == champion

    assert cli.main(["promote", "--workdir", str(wd)]) == 1           # the CLI says no too
    assert "worse than champion" in capsys.readouterr().err
    assert registry.alias_version(registry.MLLM, "champion") == champion

    with registry.start_run("serendip-mllm", wd, run_name="equal"):
        equal = registry.register_mllm(res.model_dir, metrics=_with_baseline(res.metrics),
                                       workdir=wd)
    assert cli.main(["promote", "--workdir", str(wd)]) == 0           # not worse: promoted
    assert registry.alias_version(registry.MLLM, "champion") == equal


def test_missing_alias_and_model_are_clear_errors(store, monkeypatch):
    wd, *_ = store
    from serendip.errors import SerendipError

    registry.setup(wd)
    with pytest.raises(SerendipError, match="no version with alias @nope"):
        registry.resolve_version(registry.MLLM, "@nope")
    with pytest.raises(SerendipError, match="serendip model directory"):
        registry.register_mllm(Path(wd), workdir=wd)


def test_promote_unknown_version_name_or_alias_is_exit_2_one_line(store, capsys):
    """Issue 12 case 10: `promote --version 99` was an MLflow traceback with exit 1 (which
    means "the gate refused"); a client mistake is one line and exit 2."""
    wd, res, _ = store
    registry.setup(wd)
    if registry.alias_version(registry.MLLM, "challenger") is None:
        with registry.start_run("serendip-mllm", wd, run_name="v"):
            registry.register_mllm(res.model_dir, metrics=_with_baseline(res.metrics),
                                   workdir=wd)
    champion = registry.alias_version(registry.MLLM, "champion")
    capsys.readouterr()
    cases = [(["--version", "99"], "no version 99"),
             (["--name", "nope"], "no registered model 'nope'"),
             (["--version", "@nope"], "no version with alias @nope")]
    for extra, expected in cases:
        code = cli.main(["promote", "--workdir", str(wd), *extra])
        err = capsys.readouterr().err
        assert code == 2, (extra, err)
        assert expected in err and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
    assert registry.alias_version(registry.MLLM, "champion") == champion
    from serendip.errors import SerendipError

    for uri in ("models:/serendip-mllm/99", "models:/nope@champion"):
        with pytest.raises(SerendipError, match="no version 99|no registered model"):
            load_predictor(uri, wd)


@pytest.mark.parametrize("uri, expected", [("foo://x", "unknown scheme 'foo'"),
                                           ("http://", "has no host"),
                                           ("http://127.0.0.1:99999", "invalid port")])
def test_bad_tracking_uri_is_one_line(tmp_path, monkeypatch, capsys, uri, expected):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    code = cli.main(["promote", "--workdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "MLFLOW_TRACKING_URI" in err
    assert len(err.strip().splitlines()) == 1


def test_translate_sorts_client_mistakes_from_server_faults():
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    from serendip.errors import SerendipError, ServiceError

    gone = registry.translate(MlflowException("x not found", error_code=RESOURCE_DOES_NOT_EXIST))
    assert type(gone) is SerendipError
    down = registry.translate(MlflowException(
        "API request to http://127.0.0.1:1/api/2.0/x failed with exception Max retries exceeded"))
    assert isinstance(down, ServiceError) and "did not answer" in str(down)


def test_each_workdir_gets_its_own_default_store(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri writes the URI into MLFLOW_TRACKING_URI: the second work dir
    of a process used to land in the first one's store (seen in the bad-input catalogue)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    a, b = tmp_path / "a", tmp_path / "b"
    assert registry.setup(a).endswith(f"{a.resolve()}/mlflow/mlflow.db")
    assert registry.setup(b).endswith(f"{b.resolve()}/mlflow/mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mine.db'}")
    assert registry.setup(a) == f"sqlite:///{tmp_path / 'mine.db'}"     # the user's setting wins
