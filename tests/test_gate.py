"""The promotion gate (issue 15 item 3): ``@champion`` moves only when the challenger is not
worse than the champion **and** beats the best baseline by more than the margin; otherwise one
line says why (exit 1) and both aliases stay; ``--force`` promotes and is recorded on the
version. The same for the retriever against popularity within the cluster.

Bare model versions with recorded tags: the gate reads tags and reports, never the weights."""

from __future__ import annotations

import json
import os

import pyarrow.compute as pc
import pytest

from serendip import cli

pytest.importorskip("mlflow")
from serendip.platform import registry  # noqa: E402
from serendip.platform.retriever_registry import GATE_METRIC, RETRIEVER  # noqa: E402


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    registry.setup(tmp_path)
    yield tmp_path
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def _version(wd, name: str, tags: dict, alias: str | None = "challenger") -> str:
    from mlflow import MlflowClient

    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except Exception:
        client.create_registered_model(name)
    v = client.create_model_version(name, source=(wd / "model").as_uri()).version
    for k, val in tags.items():
        client.set_model_version_tag(name, str(v), k, str(val))
    if alias:
        client.set_registered_model_alias(name, alias, str(v))
    return str(v)


def _choice_report(transition=0.31, random=0.25, model=None, versions=()):
    """A baselines_stage report (only what the gate reads)."""
    methods = {"random_sibling": {"recall": {"value": random}},
               "transition": {"recall": {"value": transition}}}
    if model is not None:
        methods["model"] = {"recall": {"value": model}}
    best = max(("random_sibling", "transition"), key=lambda m: methods[m]["recall"]["value"])
    return {"case_sets": [{"cases": "all serendipitous pairs of held-out contexts",
                           "n_cases": 4113, "methods": methods, "best_baseline": best}],
            "model": {"model_versions": list(versions)}}


def test_gate_refuses_a_challenger_that_loses_to_the_transition_baseline(store, capsys):
    wd = store
    champion = _version(wd, registry.MLLM, {"recall_constrained": 0.20,
                                            "baseline_random_sibling_recall": 0.15},
                        alias="champion")
    challenger = _version(wd, registry.MLLM, {"recall_constrained": 0.27,
                                              "baseline_random_sibling_recall": 0.25})
    # better than the champion, but the transition statistics choose better still
    report = wd / "baselines.json"
    report.write_text(json.dumps(_choice_report(transition=0.31, model=0.27,
                                                versions=[f"serendip-mllm/v{challenger}"])))
    capsys.readouterr()
    code = cli.main(["promote", "--workdir", str(wd), "--baselines", str(report)])
    out, err = capsys.readouterr()
    assert code == 1, err
    line = err.strip()
    assert len(line.splitlines()) == 1
    assert "recall 0.2700 \u2264 best baseline transition 0.3100 + margin 0.00" in line
    assert f"@champion stays v{champion}" in line and "--force" in line
    assert registry.alias_version(registry.MLLM, "champion") == champion
    assert registry.alias_version(registry.MLLM, "challenger") == challenger
    assert json.loads(out)["baseline"]["method"] == "transition"

    # the same challenger, the same report, --force: promoted, said and recorded
    code = cli.main(["promote", "--workdir", str(wd), "--baselines", str(report), "--force"])
    out, err = capsys.readouterr()
    assert code == 0 and "FORCED" in out and "transition" in out
    assert json.loads(out[:out.rindex("}") + 1])["forced"] is True
    assert registry.alias_version(registry.MLLM, "champion") == challenger
    from mlflow import MlflowClient

    tags = MlflowClient().get_model_version(registry.MLLM, challenger).tags
    assert tags["promoted_forced"] == "true" and "transition" in tags["forced_over"]
    assert tags["gate_baseline"] == "transition" and tags["promoted_over"] == champion


def test_gate_margin_and_the_first_champion(store):
    wd = store
    v1 = _version(wd, registry.MLLM, {"recall_constrained": 0.30,
                                      "baseline_random_sibling_recall": 0.33})
    # no champion yet: the first one still has to beat the baselines (it did not before)
    first = registry.promote(registry.MLLM, workdir=wd)
    assert not first.promoted and "random_sibling 0.3300" in first.message
    assert registry.alias_version(registry.MLLM, "champion") is None
    v2 = _version(wd, registry.MLLM, {"recall_constrained": 0.34,
                                      "baseline_random_sibling_recall": 0.33})
    tight = registry.promote(registry.MLLM, v2, workdir=wd, margin=0.02)
    assert not tight.promoted and "+ margin 0.02" in tight.message
    ok = registry.promote(registry.MLLM, v2, workdir=wd, margin=0.005)
    assert ok.promoted and registry.alias_version(registry.MLLM, "champion") == v2
    # equal to the baseline is not above it (default margin 0: strictly above)
    v3 = _version(wd, registry.MLLM, {"recall_constrained": 0.35,
                                      "baseline_random_sibling_recall": 0.35})
    assert not registry.promote(registry.MLLM, v3, workdir=wd).promoted
    assert v1 != v2


def test_gate_report_of_another_version_and_bad_margin_are_exit_2(store, capsys):
    wd = store
    _version(wd, registry.MLLM, {"recall_constrained": 0.5,
                                 "baseline_random_sibling_recall": 0.3})
    report = wd / "b.json"
    report.write_text(json.dumps(_choice_report(model=0.5, versions=["serendip-mllm/v7"])))
    capsys.readouterr()
    assert cli.main(["promote", "--workdir", str(wd), "--baselines", str(report)]) == 2
    err = capsys.readouterr().err
    assert "not the challenger v1" in err and len(err.strip().splitlines()) == 1
    for bad in ("-0.1", "nan", "x"):
        with pytest.raises(SystemExit) as e:
            cli.main(["promote", "--workdir", str(wd), "--margin", bad])
        assert e.value.code == 2
        assert "--margin" in capsys.readouterr().err
    assert registry.alias_version(registry.MLLM, "champion") is None


def test_retriever_gate_refuses_a_retriever_that_loses_to_popularity(store, capsys):
    wd = store
    champion = _version(wd, RETRIEVER, {"ndcg_at_10": 0.10, "popularity_ndcg_at_10": 0.08},
                        alias="champion")
    # not worse than the champion, but popularity within the cluster ranks better
    loser = _version(wd, RETRIEVER, {"ndcg_at_10": 0.21, "popularity_ndcg_at_10": 0.25})
    res = registry.promote(RETRIEVER, loser, metric=GATE_METRIC, workdir=wd)
    assert not res.promoted
    assert "ndcg_at_10 0.2100 \u2264 best baseline popularity 0.2500" in res.message
    assert registry.alias_version(RETRIEVER, "champion") == champion
    capsys.readouterr()
    assert cli.main(["promote", "--workdir", str(wd), "--name", RETRIEVER]) == 1
    assert "popularity" in capsys.readouterr().err
    winner = _version(wd, RETRIEVER, {"ndcg_at_10": 0.30, "popularity_ndcg_at_10": 0.25})
    assert cli.main(["promote", "--workdir", str(wd), "--name", RETRIEVER]) == 0
    assert registry.alias_version(RETRIEVER, "champion") == winner


class _RankCandidates:
    """A stand-in challenger that ranks each context's candidates in reverse id order."""

    model_version = "serendip-mllm/v1"

    def __init__(self, clusters):
        self.level = 3
        from serendip.prompts import PromptConfig

        self.prompt_config = PromptConfig("text")
        self.cluster_ids = clusters.filter(pc.equal(clusters.column("level"), 3)) \
            .column("cluster_id").to_pylist()

    def predict(self, inputs, k=1, constrained=True, candidates=None):
        from types import SimpleNamespace

        return [[SimpleNamespace(cluster_id=c) for c in sorted(cs, reverse=True)[:k]]
                for cs in candidates]


def test_gate_on_a_workdir_uses_the_cluster_choice_baselines(synth_dir, store, capsys):
    """Without --baselines the gate also measures transition statistics / random sibling on
    the work directory's curated test split (training logs only) — a challenger whose recorded
    recall is below them is refused although it beats its recorded baselines; a real
    baselines_stage report (the challenger ranked on every held-out pair) is read as well."""
    from synth_tree import synth_tree

    from serendip.curation import CurationConfig, curate_stage
    from serendip.data.io import write_table
    from serendip.evaluation.baselines import baselines_stage

    items, inter, clusters, ic = synth_tree(synth_dir)
    wd = store
    write_table(wd, "items", items)
    write_table(wd, "interactions", inter, refs={"items": items})
    write_table(wd, "clusters", clusters)
    write_table(wd, "item_clusters", ic, refs={"items": items})
    curate_stage(wd, wd, CurationConfig(seed=0))
    cur = next(cs for cs in baselines_stage(wd, n_boot=1)["case_sets"]
               if "curated" in cs["cases"])
    best = cur["best_baseline"]
    value = cur["methods"][best]["recall"]["value"]
    v = _version(wd, registry.MLLM, {"recall_constrained": value - 0.01,
                                     "baseline_random_sibling_recall": 0.0})
    capsys.readouterr()
    assert cli.main(["promote", "--workdir", str(wd)]) == 1
    err = capsys.readouterr().err
    assert f"best baseline {best} {value:.4f}" in err and "curated" in err, err
    assert registry.alias_version(registry.MLLM, "champion") is None

    rep = baselines_stage(wd, predictor=_RankCandidates(clusters), n_boot=1)
    path = wd / "report.json"
    path.write_text(json.dumps({k: x for k, x in rep.items() if k != "markdown"}))
    base = registry.baseline_from_report(json.loads(path.read_text()), v)
    allp = rep["case_sets"][0]
    assert base.method == allp["best_baseline"]
    assert base.challenger_value == allp["methods"]["model"]["recall"]["value"]
    code = cli.main(["promote", "--workdir", str(wd), "--baselines", str(path)])
    beats = base.challenger_value > base.value
    assert code == (0 if beats else 1)
