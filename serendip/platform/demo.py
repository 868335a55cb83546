"""``serendip demo``: every stage on the embedded default (or on your own tables), then a report.

synth (into ``platform/``) → hold out each user's last transition → training pipeline
(kfp.local) → promotion gate → scoring pipeline (kfp.local, Feast) → start the server → a few
``recommend`` calls → online simulation (+ ablations) → replay evaluation → report.

With ``--data DIR`` (your own tables, e.g. the output of ``serendip import recbole``) there is
no synthetic ground truth: each user's last transition is held out FIRST (the replay split of
:mod:`serendip.evaluation.replay`, written into the work directory), every model is trained on
the rest, and the replay evaluation of the held-out transitions replaces the online simulation
and the ablations (the report says so). The prompt strategy follows the media present (the
curation stage adapts: text-only tables get the text prompt).

Everything it makes stays inside its work directory, so two demos never collide and the
source tree stays clean; finished steps are reused when it is run again.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from serendip.errors import ConfigError


@dataclass
class DemoSize:
    items: int
    users: int
    interactions: int
    branching: tuple[int, int, int, int]
    finetune_steps: int
    retriever_epochs: int
    n_contexts: int
    seeds: tuple[int, ...]
    ablation: bool
    ablation_steps: int
    finetune_batch: int = 32
    ablation_batch: int = 16
    coverage: float = 0.8
    # Zipf traffic makes the latent topics themselves unbalanced; traffic_power=0.5 keeps the
    # tree close to the taxonomy (ARI ~0.9 at levels 3-4) while still weighting by traffic.
    # delta=2: a level-3 cluster has only b3-1 siblings under its level-2 parent (3 here), so a
    # random sibling already scores 1/3 and 3x it exceeds the log-label ceiling (~0.55); sharing
    # the level-1 cluster gives 11 candidates, closer to the paper's wide trees.
    # Ablation runs as long as the main fine-tune (400 steps): the visual cue emerges between
    # steps 200 and 300 (the champion's curve), so shorter runs compare text, which learns at
    # once, against video variants that have not started to learn yet.
    pipeline: dict = field(default_factory=dict)
    # --data: the tree follows the catalogue size (auto: 1,682 items -> 4/4/2/2); delta=2 so a
    # level-3 cluster has every level-3 cluster under its level-1 parent as a candidate; the
    # prompt follows the media present (adapt_prompt: text-only tables get the text prompt —
    # the curate component sets the prompt fields, which otherwise pins chain of thought).
    data_branching: str = "auto"
    data_pipeline: dict = field(default_factory=lambda: {
        "delta": 2, "curation_settings": {"adapt_prompt": True}})


SIZES = {
    # small: the end-to-end test — every stage for real, sized for minutes on 2 cores
    "small": DemoSize(items=600, users=200, interactions=8000, branching=(2, 2, 3, 2),
                      finetune_steps=120, finetune_batch=8, retriever_epochs=2, n_contexts=100,
                      seeds=(0, 1), ablation=False, ablation_steps=0,
                      pipeline={"cluster_settings": {"traffic_power": 0.5}, "delta": 2}),
    "default": DemoSize(items=2000, users=600, interactions=30000, branching=(4, 3, 4, 2),
                        finetune_steps=400, retriever_epochs=6, n_contexts=300,
                        seeds=(0, 1, 2, 3, 4), ablation=True, ablation_steps=400,
                        ablation_batch=32,
                        pipeline={"cluster_settings": {"traffic_power": 0.5}, "delta": 2}),
}


def size_preset(name: str) -> DemoSize:
    if name not in SIZES:
        raise ConfigError(f"unknown demo size {name!r}", field="--size",
                          fix=f"use one of {', '.join(SIZES)}")
    return SIZES[name]


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
    from serendip.locks import workdir_lock

    with workdir_lock(wd, "demo", "demo"):
        if src is not None:
            return _run_data_demo(wd, preset, size, seed, src)
        return _run_demo(wd, preset, size, seed)


def _run_demo(wd: Path, preset: DemoSize, size: str, seed: int) -> Path:
    from serendip.steps import Steps

    os.environ.update({k: v for k, v in _env(wd).items() if k.startswith(("MLFLOW", "HF_"))})
    steps = Steps(wd)
    info: dict = {"size": size, "preset": asdict(preset)}
    from serendip.platform import demo_stages as st

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
    return _replay_and_report(wd, steps, info, platform, seed, st.write_report)


def _source_files(src: Path) -> list[Path]:
    return sorted(p for p in src.iterdir() if p.is_file())


def _run_data_demo(wd: Path, preset: DemoSize, size: str, seed: int, src: Path) -> Path:
    from serendip.steps import Steps

    os.environ.update({k: v for k, v in _env(wd).items() if k.startswith(("MLFLOW", "HF_"))})
    steps = Steps(wd)
    info: dict = {"size": size, "preset": asdict(preset), "data": str(src)}
    from serendip.platform import demo_stages as st

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
    return _replay_and_report(wd, steps, info, src, seed, st.write_data_report)


def _replay_and_report(wd: Path, steps, info: dict, logs: Path, seed: int, write) -> Path:
    """The replay evaluation of ``logs``' held-out transitions (after scoring), then the
    report ``write(wd, info)`` with the step timings; prints and returns its path."""
    from serendip.platform import demo_stages as st

    info["replay"] = steps.run("replay-evaluation", lambda: st.replay_evaluation(wd, logs, seed),
                               config={"training": info["training"], "seed": seed},
                               inputs=[wd / "item_serendipity.parquet"],
                               outputs=[wd / "evaluation" / "replay.json",
                                        wd / "evaluation" / "baselines.json"])
    info["timings_s"] = {k: round(v, 1) for k, v in steps.timings.items()}
    info["cached_steps"] = steps.cached
    report = write(wd, info)
    print(f"\nreport: {report}")
    return report
