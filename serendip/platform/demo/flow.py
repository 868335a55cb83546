"""The demo's flow: which stage runs when, each keyed on the settings it reads so that a rerun
reuses every finished step (:class:`serendip.steps.Steps`); see :mod:`serendip.platform.demo`."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from serendip.errors import ConfigError
from serendip.locks import workdir_lock
from serendip.platform.demo import report
from serendip.platform.demo import stages as st
from serendip.platform.demo.sizes import DemoSize, size_preset
from serendip.steps import Steps


def run_demo(workdir: str | os.PathLike, size: str = "default", seed: int = 0,
             data: str | os.PathLike | None = None) -> Path:
    """Run the demo in ``workdir``; on the synthetic platform, or on the tables in ``data``.
    Returns the path of report.md.

    Raises:
        ConfigError: an unknown size, or a ``data`` directory without the tables.
    """
    preset = size_preset(size)
    src = check_data_dir(data, workdir) if data is not None else None
    wd = Path(workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    with workdir_lock(wd, "demo", "demo"):
        if src is not None:
            return _run_data_demo(wd, preset, size, seed, src)
        return _run_demo(wd, preset, size, seed)


def check_data_dir(data: str | os.PathLike, workdir: str | os.PathLike) -> Path:
    """``--data``: a directory holding the ``items`` and ``interactions`` tables (parquet or
    CSV), other than the work directory (the demo writes the training split there).

    Raises:
        ConfigError: the directory is missing, lacks a table, or is the work directory.
    """
    from serendip.data.io import has_table

    d = Path(data)
    if not d.is_dir():
        raise ConfigError(f"{d} is not a directory", field="--data",
                          fix="pass a directory holding items and interactions tables, e.g. "
                              "the --out of `serendip import recbole`")
    for name in ("items", "interactions"):
        if not has_table(d, name):
            raise ConfigError(f"{d} has no {name} table ({name}.parquet or {name}.csv)",
                              field="--data",
                              fix="pass a directory holding items and interactions tables, "
                                  "e.g. the --out of `serendip import recbole`")
    if d.resolve() == Path(workdir).resolve():
        raise ConfigError(f"--data {d} is the work directory", field="--data",
                          fix="pass another --workdir: the demo writes the training split there")
    return d.resolve()


def _env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "1")
    env["MLFLOW_TRACKING_URI"] = env.get("SERENDIP_MLFLOW_URI",
                                         f"sqlite:///{(workdir / 'mlflow' / 'mlflow.db').resolve()}")
    return env


def _fields(preset: DemoSize, *names: str) -> dict:
    d = asdict(preset)
    return {n: d[n] for n in names}


def _run_demo(wd: Path, preset: DemoSize, size: str, seed: int) -> Path:
    os.environ.update({k: v for k, v in _env(wd).items() if k.startswith(("MLFLOW", "HF_"))})
    steps = Steps(wd)
    info: dict = {"size": size, "preset": asdict(preset)}
    # Each step is keyed on the settings it reads, so changing e.g. the ablation budget
    # re-runs only the ablation.
    synth_key = {**_fields(preset, "items", "users", "interactions", "branching"), "seed": seed}
    train_key = {**synth_key, **_fields(preset, "finetune_steps", "finetune_batch",
                                        "retriever_epochs", "pipeline")}
    # The platform's full logs go to platform/; each user's last transition is held out
    # before any model is trained (the replay evaluation at the end replays them).
    platform = wd / "platform"
    info["synth"] = steps.run("synth", lambda: st.synth(platform, preset, seed),
                              config=synth_key,
                              outputs=[platform / "items.parquet",
                                       platform / "interactions.parquet", platform / "truth"])
    info["split"] = steps.run("replay-split", lambda: st.replay_split(wd, platform),
                              config=synth_key, inputs=_source_files(platform),
                              outputs=[wd / "items.parquet", wd / "interactions.parquet",
                                       wd / "truth"])
    data = [wd / "items.parquet", wd / "interactions.parquet"]
    info["training"] = steps.run("training-pipeline", lambda: st.training(wd, preset, seed),
                                 config=train_key, inputs=data,
                                 outputs=[wd / "clusters.parquet", wd / "examples.parquet",
                                          wd / "retriever",
                                          wd / "evaluation" / "mllm_offline.md"])
    info["scoring"] = steps.run("scoring-pipeline", lambda: st.scoring(wd, preset),
                                config={"coverage": preset.coverage, "training": info["training"]},
                                inputs=data, outputs=[wd / "item_serendipity.parquet"])
    info["serving"] = st.serve_and_recommend(wd, _env(wd))
    info["online_sim"] = steps.run("online-sim", lambda: st.online_sim(wd, preset),
                                   config={**_fields(preset, "n_contexts", "seeds"),
                                           "training": info["training"]},
                                   inputs=[wd / "item_serendipity.parquet"],
                                   outputs=[wd / "evaluation" / "online_sim.json"])
    if preset.ablation:
        info["ablation"] = steps.run("ablation", lambda: st.ablation(wd, preset),
                                     config={**_fields(preset, "ablation_steps",
                                                       "ablation_batch"), "training": train_key},
                                     inputs=[wd / "examples.parquet"],
                                     outputs=[wd / "evaluation" / "ablation.json"])
    return _replay_and_report(wd, steps, info, platform, seed, report.write_report)


def _source_files(src: Path) -> list[Path]:
    return sorted(p for p in src.iterdir() if p.is_file())


def _run_data_demo(wd: Path, preset: DemoSize, size: str, seed: int, src: Path) -> Path:
    os.environ.update({k: v for k, v in _env(wd).items() if k.startswith(("MLFLOW", "HF_"))})
    steps = Steps(wd)
    info: dict = {"size": size, "preset": asdict(preset), "data": str(src)}
    split_key = {"data": str(src), "seed": seed}
    info["split"] = steps.run("replay-split", lambda: st.replay_split(wd, src),
                              config=split_key, inputs=_source_files(src),
                              outputs=[wd / "items.parquet", wd / "interactions.parquet"])
    data = [wd / "items.parquet", wd / "interactions.parquet"]
    train_key = {**split_key, **_fields(preset, "finetune_steps", "finetune_batch",
                                        "retriever_epochs", "data_branching", "data_pipeline")}
    info["training"] = steps.run(
        "training-pipeline",
        lambda: st.training(wd, preset, seed, branching=preset.data_branching,
                            pipeline=preset.data_pipeline),
        config=train_key, inputs=data,
        outputs=[wd / "clusters.parquet", wd / "examples.parquet", wd / "retriever",
                 wd / "evaluation" / "mllm_offline.md"])
    info["scoring"] = steps.run("scoring-pipeline", lambda: st.scoring(wd, preset),
                                config={"coverage": preset.coverage, "training": info["training"]},
                                inputs=data, outputs=[wd / "item_serendipity.parquet"])
    info["serving"] = st.serve_and_recommend(wd, _env(wd))
    return _replay_and_report(wd, steps, info, src, seed, report.write_data_report)


def _replay_and_report(wd: Path, steps, info: dict, logs: Path, seed: int, write) -> Path:
    """The replay evaluation of ``logs``' held-out transitions (after scoring), then the
    report ``write(wd, info)`` with the step timings; prints and returns its path."""
    info["replay"] = steps.run("replay-evaluation", lambda: st.replay_evaluation(wd, logs, seed),
                               config={"training": info["training"], "seed": seed},
                               inputs=[wd / "item_serendipity.parquet"],
                               outputs=[wd / "evaluation" / "replay.json",
                                        wd / "evaluation" / "baselines.json"])
    info["timings_s"] = {k: round(v, 1) for k, v in steps.timings.items()}
    info["cached_steps"] = steps.cached
    path = write(wd, info)
    print(f"\nreport: {path}")
    return path
