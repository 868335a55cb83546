"""The bad-input catalogue (issue 12): every input error the CLI and the servers answer.

Each :class:`Case` builds its own input in a temporary work directory, runs the CLI in-process
(``serendip.cli.main``) and checks the answer: exit code 2, ONE line on stderr that names the
field and says how to fix it. Server cases (HTTP 400) give their own ``run`` function.

The same list renders ``docs/bad-inputs.md``; every case checks that its row in the committed
doc is current. After adding or changing a case (or an error message), regenerate the doc:

    .venv/bin/python tests/test_bad_inputs.py          # rewrites docs/bad-inputs.md

To add a case, append a ``Case(...)`` to the section of your area below (sections are marked
``# --- <area> ---``). ``build(wd)`` writes the input under ``wd``; ``argv`` may use ``{wd}``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "bad-inputs.md"
REGENERATE = ".venv/bin/python tests/test_bad_inputs.py"


@dataclass
class Case:
    """One bad input: ``argv`` run by the CLI after ``build(wd)`` wrote the input files.

    ``field`` must appear in the message; ``code`` is the exit code (CLI) or HTTP status.
    ``run(wd) -> (code, message)`` replaces the CLI call (servers, library entry points).
    """

    name: str                                   # unique, kebab-case
    section: str                                # tables | cli settings | registry | serving
    what: str                                   # the user's mistake, in words
    argv: list[str]
    field: str
    build: Callable[[Path], None] | None = None
    code: int = 2
    run: Callable[[Path], tuple[int, str]] | None = None


# ---------------------------------------------------------------- input builders
def _ts(n: int) -> pa.Array:
    return pa.array([1_767_261_600 + 60 * i for i in range(n)], pa.int64()).cast(
        pa.timestamp("s", tz="UTC")).cast(pa.timestamp("us", tz="UTC"))


def items_cols(n: int = 4) -> dict:
    return {"item_id": [f"v{i}" for i in range(1, n + 1)],
            "title": [f"title {i}" for i in range(1, n + 1)],
            "impressions": [100 * (n - i) for i in range(n)]}


def inter_cols(n: int = 4) -> dict:
    return {"user_id": ["u1"] * n, "context_item_id": [f"v{i % 4 + 1}" for i in range(n)],
            "next_item_id": [f"v{(i + 1) % 4 + 1}" for i in range(n)],
            "satisfaction": [0.5] * n, "ts": _ts(n)}


def _recbole(wd: Path, inter_lines: str) -> None:
    """RecBole atomic files x.inter (given lines) + x.item (items 1, 2) under ``wd``."""
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "x.inter").write_text("user_id:token\titem_id:token\trating:float\t"
                                "timestamp:float\n" + inter_lines)
    (wd / "x.item").write_text("item_id:token\ttitle:token_seq\n1\tOne\n2\tTwo\n")


def clusters_cols() -> dict:
    """A 4-level chain tree: 2 clusters per level, one branch per level-1 cluster."""
    ids, level, parent, desc = [], [], [], []
    for branch in "ab":
        prev = None
        for lvl in range(1, 5):
            cid = f"{branch}{lvl}"
            ids.append(cid)
            level.append(lvl)
            parent.append(prev)
            desc.append(f"topic {branch} level {lvl}")
            prev = cid
    return {"cluster_id": ids, "level": level, "parent_id": parent, "description": desc,
            "size": [2] * 8, "traffic": [10] * 8}


def item_clusters_cols() -> dict:
    return {"item_id": ["v1", "v2", "v3", "v4"],
            **{f"c{lvl}": [f"{b}{lvl}" for b in "aabb"] for lvl in range(1, 5)}}


def write_parquet(wd: Path, name: str, cols: dict) -> None:
    wd.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), wd / f"{name}.parquet")


def write_csv(wd: Path, name: str, text: str) -> None:
    wd.mkdir(parents=True, exist_ok=True)
    (wd / f"{name}.csv").write_text(text)


def tables(**over) -> Callable[[Path], None]:
    """A builder writing valid items + interactions as parquet; ``over`` replaces columns
    (``items__title=None`` drops the column) or adds tables (``clusters=True``)."""
    def build(wd: Path) -> None:
        cols = {"items": items_cols(), "interactions": inter_cols()}
        if over.get("clusters"):
            cols["clusters"] = clusters_cols()
            cols["item_clusters"] = item_clusters_cols()
        for key, value in over.items():
            if "__" not in key:
                continue
            table, col = key.split("__", 1)
            if value is None:
                cols[table].pop(col, None)
            else:
                cols[table][col] = value
        for name, c in cols.items():
            write_parquet(wd, name, c)
    return build


def curated_before_the_manifest(wd: Path) -> None:
    """A curated work dir whose curation.json has flat prompt keys, no ``prompt`` object."""
    tables(clusters=True)(wd)
    write_parquet(wd, "examples", {"context_item_id": ["v1"]})
    (wd / "curation.json").write_text('{"level": 3, "delta": 1, "strategy": "cot", '
                                      '"n_frames": 4, "use_thumbnail": false}')


def curated_without_delta(wd: Path) -> None:
    """A curated work dir whose curation.json lacks δ (it used to be read as δ = 1)."""
    import json

    from serendip.curation import CurationConfig, CurationManifest
    from serendip.prompts import PromptConfig

    tables(clusters=True)(wd)
    write_parquet(wd, "examples", {"context_item_id": ["v1"]})
    doc = CurationManifest(CurationConfig(delta=2, prompt=PromptConfig("text"))).to_json()
    doc.pop("delta")
    (wd / "curation.json").write_text(json.dumps(doc))


def csv(name: str, text: str, with_interactions: bool = False) -> Callable[[Path], None]:
    def build(wd: Path) -> None:
        write_csv(wd, name, text)
        if with_interactions:
            write_parquet(wd, "interactions", inter_cols())
    return build


def raw(name: str, data: bytes) -> Callable[[Path], None]:
    def build(wd: Path) -> None:
        wd.mkdir(parents=True, exist_ok=True)
        (wd / name).write_bytes(data)
    return build


VALIDATE = ["validate", "--data", "{wd}"]

CASES: list[Case] = [
    # --- tables ---
    Case("items-missing-column", "tables", "items table without a title column",
         VALIDATE, "items.title", tables(items__title=None)),
    Case("items-wrong-type", "tables", "impressions written as words",
         VALIDATE, "items.impressions", tables(items__impressions=["many"] * 4)),
    Case("items-null-id", "tables", "an item without an id",
         VALIDATE, "items.item_id", tables(items__item_id=["v1", None, "v3", "v4"])),
    Case("items-duplicate-id", "tables", "the same item id twice",
         VALIDATE, "items.item_id", tables(items__item_id=["v1", "v1", "v3", "v4"])),
    Case("items-negative-impressions", "tables", "a negative impression count",
         VALIDATE, "items.impressions", tables(items__impressions=[5, -1, 3, 2])),
    Case("interactions-satisfaction-range", "tables", "satisfaction on a 1-5 star scale",
         VALIDATE, "interactions.satisfaction",
         tables(interactions__satisfaction=[1.0, 5.0, 3.0, 4.0])),
    Case("interactions-dangling-item", "tables", "an interaction with an unknown item",
         VALIDATE, "interactions.next_item_id",
         tables(interactions__next_item_id=["v2", "v3", "zz", "v1"])),
    Case("items-corrupt-file", "tables", "items.parquet that is not parquet",
         VALIDATE, "items", raw("items.parquet", b"not a parquet file")),
    Case("no-tables", "tables", "a directory without any table",
         VALIDATE, "--data", lambda wd: wd.mkdir(parents=True, exist_ok=True)),
    Case("items-float-ids", "tables", "item ids written as floats (1e3, 1.0)",
         VALIDATE, "items.item_id", tables(items__item_id=[1.0, 2.0, 1e3, 1e20])),
    Case("items-negative-duration", "tables", "a negative duration",
         VALIDATE, "items.duration_s", tables(items__duration_s=[1.0, -5.0, 2.0, 3.0])),
    Case("items-csv-not-a-number", "tables", "NA in a CSV's number column",
         VALIDATE, "items.impressions", csv("items", "item_id,title,impressions\nv1,t,NA\n")),
    Case("items-csv-ragged-row", "tables", "a CSV row with an extra field",
         VALIDATE, "items", csv("items", "item_id,title,impressions\nv1,t,1,extra\n")),
    Case("items-csv-semicolons", "tables", "a semicolon-separated CSV (European Excel)",
         VALIDATE, "items", csv("items", "item_id;title;impressions\nv1;t;1\n")),
    Case("items-csv-newer-than-parquet", "tables",
         "an edited items.csv beside an older items.parquet",
         VALIDATE, "items", lambda wd: (tables()(wd), os.utime(wd / "items.parquet", (1, 1)),
                                        write_csv(wd, "items", "item_id,title,impressions\n"
                                                               "v1,t,1\n"))),
    Case("interactions-missing-ts", "tables", "interactions without a ts column",
         VALIDATE, "interactions.ts", tables(interactions__ts=None)),
    Case("interactions-ts-milliseconds", "tables", "ts as Unix milliseconds",
         VALIDATE, "interactions.ts",
         tables(interactions__ts=[1_767_261_600_000 + i for i in range(4)])),
    Case("interactions-ts-text", "tables", "ts as free text",
         VALIDATE, "interactions.ts", tables(interactions__ts=["yesterday"] * 4)),
    Case("interactions-ts-float", "tables", "ts as float seconds",
         VALIDATE, "interactions.ts", tables(interactions__ts=[1.5e9] * 4)),
    Case("interactions-null-user", "tables", "an interaction without a user",
         VALIDATE, "interactions.user_id", tables(interactions__user_id=["u1", None, "u1", "u1"])),
    Case("clusters-level-out-of-range", "tables", "a cluster at level 5",
         VALIDATE, "clusters.level",
         tables(clusters=True, clusters__level=[1, 2, 3, 5, 1, 2, 3, 4])),
    Case("clusters-duplicate-description", "tables", "two clusters with the same description",
         VALIDATE, "clusters.description",
         tables(clusters=True, clusters__description=["same"] * 8)),
    Case("item-clusters-dangling-item", "tables", "item_clusters naming an unknown item",
         VALIDATE, "item_clusters.item_id",
         tables(clusters=True, item_clusters__item_id=["v1", "v2", "v3", "zz"])),
    Case("item-clusters-unknown-cluster", "tables", "item_clusters naming a cluster not in clusters",
         VALIDATE, "item_clusters.c3",
         tables(clusters=True, item_clusters__c3=["a3", "a3", "b3", "x3"])),
    Case("items-empty-id", "tables", "a CSV item id written as \"\"",
         VALIDATE, "items.item_id", csv("items", 'item_id,title,impressions\n"",t,1\n')),
    Case("item-clusters-missing-level", "tables", "item_clusters without c4",
         VALIDATE, "item_clusters.c4", tables(clusters=True, item_clusters__c4=None)),
    Case("finetune-missing-items", "tables", "finetune on a directory without items",
         ["finetune", "--workdir", "{wd}"], "items",
         lambda wd: wd.mkdir(parents=True, exist_ok=True)),
    Case("finetune-curation-without-prompt", "tables",
         "a work dir curated by an older version (curation.json has no prompt manifest)",
         ["finetune", "--workdir", "{wd}"], "prompt", curated_before_the_manifest),
    Case("curation-without-delta", "tables",
         "a curation.json without δ (every stage reads it through serendip.curation."
         "read_curation)", ["evaluate", "--workdir", "{wd}", "--online-sim"], "delta",
         curated_without_delta),
    Case("curate-missing-clusters", "tables", "curate before cluster",
         ["curate", "--data", "{wd}"], "clusters", tables()),
    Case("curate-stale-item-clusters", "tables", "item_clusters from an older tree",
         ["curate", "--data", "{wd}", "--delta", "3"], "item_clusters.c4",
         tables(clusters=True, item_clusters__c4=["a4", "a4", "b4", "old-b4"])),
    Case("curate-no-serendipitous-pairs", "tables",
         "logs with no pair that differs at level l but shares level l-δ",
         ["curate", "--data", "{wd}"], "level/delta", tables(clusters=True)),
    Case("curate-visual-prompt-without-media", "tables",
         "a video prompt on a catalogue without frames",
         ["curate", "--data", "{wd}", "--delta", "3", "--strategy", "video"], "items.frames",
         tables(clusters=True)),

    # --- cli settings ---
    Case("cluster-bad-branching", "cli settings", "a 2-level branching",
         ["cluster", "--data", "{wd}", "--branching", "8/8"], "branching", tables()),
    Case("cluster-unknown-setting", "cli settings", "a misspelt --set key",
         ["cluster", "--data", "{wd}", "--set", "trafic_power=0"], "trafic_power", tables()),
    Case("cluster-bad-description-share", "cli settings",
         "a description word share outside [0, 1]",
         ["cluster", "--data", "{wd}", "--set", "description_min_share=2"],
         "description_min_share", tables()),
    Case("cluster-bad-auto-leaf-items", "cli settings", "auto branching with 0 items per leaf",
         ["cluster", "--data", "{wd}", "--set", "auto_leaf_items=0"], "auto_leaf_items",
         tables()),
    Case("curate-unknown-strategy", "cli settings", "a prompt strategy that does not exist",
         ["curate", "--data", "{wd}", "--strategy", "audio"], "strategy",
         tables(clusters=True)),
    Case("curate-delta-above-level", "cli settings", "δ larger than the level",
         ["curate", "--data", "{wd}", "--level", "2", "--delta", "3"], "delta", tables()),
    Case("curate-level-out-of-range", "cli settings", "a level outside 1..4",
         ["curate", "--data", "{wd}", "--level", "5"], "level", tables()),
    Case("curate-bad-frame-count", "cli settings", "0 frames",
         ["curate", "--data", "{wd}", "--frames", "0"], "n_frames", tables()),
    Case("curate-top-k-zero", "cli settings", "top-k of 0",
         ["curate", "--data", "{wd}", "--top-k", "0"], "top_k", tables()),
    Case("curate-test-fraction", "cli settings", "a held-out fraction of 1.5",
         ["curate", "--data", "{wd}", "--set", "test_fraction=1.5"], "test_fraction", tables()),
    Case("curate-set-not-a-number", "cli settings", "a word where a number belongs",
         ["curate", "--data", "{wd}", "--set", "top_k=many"], "top_k", tables()),
    Case("set-without-equals", "cli settings", "--set without key=value",
         ["curate", "--data", "{wd}", "--set", "top_k"], "--set", tables()),
    Case("config-missing-file", "cli settings", "--config naming no file",
         ["cluster", "--data", "{wd}", "--config", "{wd}/nope.yaml"], "--config", tables()),
    Case("config-not-a-mapping", "cli settings", "a YAML config that is a list",
         ["cluster", "--data", "{wd}", "--config", "{wd}/tree.yaml"], "--config",
         lambda wd: (tables()(wd), (wd / "tree.yaml").write_text("- 8/8/8/8\n"))),
    Case("cluster-unknown-embedding-setting", "cli settings", "a misspelt embedding setting",
         ["cluster", "--data", "{wd}", "--set", "embedding.w_txt=1"], "w_txt", tables()),
    Case("cluster-negative-block-weight", "cli settings", "a negative embedding block weight",
         ["cluster", "--data", "{wd}", "--set", "embedding.w_image=-1"], "w_image", tables()),
    Case("cluster-unknown-cold-start", "cli settings", "a cold-start rule that does not exist",
         ["cluster", "--data", "{wd}", "--set", "embedding.cold_start=mean"], "cold_start",
         tables()),
    Case("cluster-unknown-hand-made-on", "cli settings", "hand-made blocks on an unknown "
         "kind of thumbnail", ["cluster", "--data", "{wd}", "--set",
                               "embedding.hand_made_on=photos"], "hand_made_on", tables()),
    Case("import-rating-not-a-number", "cli settings", "a RecBole .inter line with a word "
         "for the rating", ["import", "recbole", "--src", "{wd}", "--out", "{wd}/out"],
         "x.inter:3:rating", lambda wd: _recbole(wd, "u\t1\t5\t1\nu\t1\tfive\t2\n")),
    Case("import-unknown-item", "cli settings", "a RecBole interaction naming an item the "
         ".item file lacks", ["import", "recbole", "--src", "{wd}", "--out", "{wd}/out"],
         "x.inter:2:item_id", lambda wd: _recbole(wd, "u\t9\t5\t1\n")),
    Case("import-short-line", "cli settings", "a RecBole line with a missing field",
         ["import", "recbole", "--src", "{wd}", "--out", "{wd}/out"], "x.inter:2",
         lambda wd: _recbole(wd, "u\t1\t5\n")),
    Case("synth-items-zero", "cli settings", "zero items",
         ["synth", "--out", "{wd}", "--items", "0"], "--items"),
    Case("synth-bad-branching", "cli settings", "a 3-level synthetic taxonomy",
         ["synth", "--out", "{wd}", "--branching", "4/3/4"], "--branching"),
    Case("validate-without-data", "cli settings", "validate without --data",
         ["validate"], "--data"),
    Case("demo-data-missing", "cli settings", "demo --data naming no directory",
         ["demo", "--data", "{wd}/nope", "--workdir", "{wd}/w", "--size", "small"], "--data"),
    Case("demo-data-without-tables", "cli settings", "demo --data on a directory without "
         "items and interactions", ["demo", "--data", "{wd}", "--workdir", "{wd}/w",
                                    "--size", "small"], "--data",
         lambda wd: wd.mkdir(parents=True, exist_ok=True)),
    Case("score-coverage-out-of-range", "cli settings", "coverage above 1",
         ["score", "--workdir", "{wd}", "--coverage", "2"], "--coverage", tables()),
    Case("score-model-not-found", "cli settings", "--model naming no directory",
         ["score", "--workdir", "{wd}", "--model", "{wd}/no-model"], "--model", tables()),

    Case("finetune-steps-not-integer", "cli settings", "a fractional step count",
         ["finetune", "--workdir", "{wd}", "--set", "steps=1.5"], "steps"),
    Case("finetune-lora-targets-not-list", "cli settings", "one LoRA target given as a word "
         "(it was split into letters)", ["finetune", "--workdir", "{wd}", "--set",
                                         "lora_targets=q_proj"], "lora_targets"),
    Case("finetune-reasoning-budget", "cli settings", "a chain-of-thought budget too short "
         "for the answer marker (failed after 50 steps)",
         ["finetune", "--workdir", "{wd}", "--set", "reasoning_tokens=1"], "reasoning_tokens"),
    Case("finetune-tiny-heads", "cli settings", "attention heads not dividing the hidden size",
         ["finetune", "--workdir", "{wd}", "--set", "tiny.text_heads=3"], "tiny.text_heads"),
    Case("finetune-base-model-number", "cli settings", "a base model YAML reads as a number",
         ["finetune", "--workdir", "{wd}", "--set", "base_model=123"], "base_model"),
    Case("train-retriever-heads", "cli settings", "retriever heads not dividing dim",
         ["train-retriever", "--workdir", "{wd}", "--set", "heads=3"], "heads"),
    Case("train-retriever-epochs-fraction", "cli settings", "a fractional epoch count",
         ["train-retriever", "--workdir", "{wd}", "--set", "epochs=2.5"], "epochs"),
    # the one config loader (serendip.config.load_config, issue 13 step 2)
    Case("set-unknown-nested-key", "cli settings", "a misspelt nested setting (the close "
         "ones are named)", ["finetune", "--workdir", "{wd}", "--set", "tiny.text_hiden=96"],
         "tiny.text_hiden"),
    Case("set-nested-wrong-type", "cli settings", "a word for a nested integer",
         ["finetune", "--workdir", "{wd}", "--set", "prompt.n_frames=many"], "prompt.n_frames"),
    Case("finetune-negative-lr", "cli settings", "a negative learning rate",
         ["finetune", "--workdir", "{wd}", "--set", "lr=-1"], "lr"),
    Case("finetune-negative-time-budget", "cli settings", "a negative compute budget",
         ["finetune", "--workdir", "{wd}", "--set", "time_budget_s=-1"], "time_budget_s"),
    Case("config-file-unknown-key", "cli settings", "a misspelt key in a --config file",
         ["train-retriever", "--workdir", "{wd}", "--config", "{wd}/r.yaml"], "epoch",
         lambda wd: (wd.mkdir(parents=True, exist_ok=True),
                     (wd / "r.yaml").write_text("epoch: 3\n"))),
    Case("config-not-yaml", "cli settings", "a --config file that is not YAML",
         ["curate", "--data", "{wd}", "--config", "{wd}/c.yaml"], "--config",
         lambda wd: (wd.mkdir(parents=True, exist_ok=True),
                     (wd / "c.yaml").write_text("top_k: [1\n"))),
    Case("config-list-unknown-section", "cli settings", "a settings section that does not "
         "exist", ["config", "--list", "finetuen"], "SECTION"),

    # --- registry ---
    Case("promote-unknown-version", "registry", "promote a version that does not exist",
         ["promote", "--workdir", "{wd}", "--version", "99"], "version",
         lambda wd: _registry_store(wd, 1)),
    Case("promote-unknown-model", "registry", "promote a model name nobody registered",
         ["promote", "--workdir", "{wd}", "--name", "nope"], "name",
         lambda wd: _registry_store(wd, 1)),
    Case("promote-unknown-alias", "registry", "promote by an alias no version has",
         ["promote", "--workdir", "{wd}", "--version", "@nope"], "alias",
         lambda wd: _registry_store(wd, 1)),
    Case("promote-metric-not-recorded", "registry", "gate on a metric no version recorded",
         ["promote", "--workdir", "{wd}", "--metric", "nope"], "metric",
         lambda wd: _registry_store(wd, 2, champion="1", challenger="2")),
    Case("promote-margin-out-of-range", "registry", "a negative gate margin (the lead over "
         "the best baseline)", ["promote", "--workdir", "{wd}", "--margin", "-0.1"], "--margin",
         lambda wd: _registry_store(wd, 1, challenger="1")),
    Case("promote-baselines-missing", "registry", "a baselines report that does not exist",
         ["promote", "--workdir", "{wd}", "--baselines", "{wd}/nope.json"], "--baselines",
         lambda wd: _registry_store(wd, 1, challenger="1")),
    Case("promote-no-baseline", "registry", "gate a version with no baseline recorded and "
         "no report to beat", ["promote", "--workdir", "{wd}"], "baselines",
         lambda wd: _registry_store(wd, 1, challenger="1",
                                    tags={"recall_constrained": 0.3})),
    Case("score-unknown-alias", "registry", "score with a registry alias no version has",
         ["score", "--workdir", "{wd}", "--model", "models:/serendip-mllm@nope"], "alias",
         lambda wd: _registry_store(wd, 1)),
    Case("export-no-champion", "registry", "export from the registry before any promotion",
         ["export", "--workdir", "{wd}", "--source", "registry"], "alias",
         lambda wd: _registry_store(wd, 1)),
    Case("tracking-uri-unknown-scheme", "registry", "MLFLOW_TRACKING_URI with a scheme MLflow "
         "does not know", ["promote", "--workdir", "{wd}"], "MLFLOW_TRACKING_URI",
         lambda wd: wd.mkdir(parents=True),
         run=lambda wd: _with_env({"MLFLOW_TRACKING_URI": "mlfow://host:5000"},
                                  ["promote", "--workdir", str(wd)])),
    Case("tracking-uri-no-host", "registry", "MLFLOW_TRACKING_URI=http:// without a host",
         ["promote", "--workdir", "{wd}"], "MLFLOW_TRACKING_URI",
         lambda wd: wd.mkdir(parents=True),
         run=lambda wd: _with_env({"MLFLOW_TRACKING_URI": "http://"},
                                  ["promote", "--workdir", str(wd)])),

    # --- serving ---
    Case("serve-workdir-missing", "serving", "serve a work directory that does not exist",
         ["serve", "--workdir", "{wd}/nope", "--backend", "kserve"], "workdir"),
    Case("serve-ports-overlap", "serving", "the same port for REST and gRPC",
         ["serve", "--workdir", "{wd}", "--backend", "kserve", "--http-port", "9000",
          "--grpc-port", "9000"], "ports", lambda wd: wd.mkdir(parents=True)),
    Case("serve-port-in-use", "serving", "serve on a port another server holds (checked "
         "before anything starts)", ["serve", "--workdir", "{wd}", "--backend", "kserve",
                                     "--http-port", "<busy>"], "--http-port",
         lambda wd: wd.mkdir(parents=True), run=lambda wd: _serve_on_busy_port(wd)),
    Case("recommend-k-zero", "serving", "ask for zero recommendations",
         ["recommend", "--item", "v1", "--k", "0"], "k"),
    Case("recommend-share-out-of-range", "serving", "a serendipitous share of the blended "
         "slate above 1", ["recommend", "--item", "v1", "--share", "1.5"], "--share"),
    Case("feast-redis-without-connection", "serving", "Redis online store chosen without a "
         "connection string (SERENDIP_FEAST_ONLINE_STORE=redis)", [],
         "FEAST_REDIS_CONNECTION_STRING", run=lambda wd: _feast_env(
             wd, {"SERENDIP_FEAST_ONLINE_STORE": "redis", "FEAST_REDIS_CONNECTION_STRING": None})),
    Case("feast-key-ttl-invalid", "serving", "a Redis key TTL that is not a number of seconds "
         "(SERENDIP_FEAST_KEY_TTL_S=soon)", [], "SERENDIP_FEAST_KEY_TTL_S",
         run=lambda wd: _feast_env(wd, {"SERENDIP_FEAST_ONLINE_STORE": "redis",
                                        "FEAST_REDIS_CONNECTION_STRING": "127.0.0.1:1",
                                        "SERENDIP_FEAST_KEY_TTL_S": "soon"})),
    Case("feast-repo-without-definitions", "serving", "SERENDIP_FEATURE_REPO names a folder "
         "without Feast declarations (definitions.py); unset, the packaged repo is used", [],
         "SERENDIP_FEATURE_REPO", run=lambda wd: _feast_env(
             wd, {"SERENDIP_FEATURE_REPO": "/nonexistent/feature_repo"})),
]


def _registry_store(wd: Path, versions: int, champion: str | None = None,
                    challenger: str | None = None, tags: dict | None = None) -> None:
    """The work directory's own MLflow store with ``versions`` versions of serendip-mllm
    (bare model versions: the registry calls under test never load them), each with
    ``tags``."""
    wd.mkdir(parents=True, exist_ok=True)
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        from mlflow import MlflowClient

        from serendip.platform import registry

        registry.setup(wd)
        client = MlflowClient()
        client.create_registered_model(registry.MLLM)
        for _ in range(versions):
            v = client.create_model_version(registry.MLLM, source=(wd / "model").as_uri())
            for k, val in (tags or {}).items():
                client.set_model_version_tag(registry.MLLM, v.version, k, str(val))
        for alias, version in (("champion", champion), ("challenger", challenger)):
            if version:
                client.set_registered_model_alias(registry.MLLM, alias, version)
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def _with_env(env: dict, argv: list[str]) -> tuple[int, str]:
    from serendip.cli import main

    err = io.StringIO()
    with mock.patch.dict(os.environ, env), contextlib.redirect_stderr(err), \
            contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def _serve_on_busy_port(wd: Path) -> tuple[int, str]:
    """`serendip serve` with --http-port held by a listening socket: exit 2, one line (the
    port and holder normalised for the doc)."""
    import socket

    from serendip.cli import main

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    grpc = free.getsockname()[1]
    free.close()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["serve", "--workdir", str(wd), "--backend", "kserve",
                         "--http-port", str(port), "--grpc-port", str(grpc)])
    finally:
        s.close()
    msg = re.sub(r" \(pid \d+: [^)]*\)", "", err.getvalue()).replace(str(port), "<busy>")
    return code, msg


def _feast_env(wd: Path, env: dict) -> tuple[int, str]:
    """Open the work directory's Feast store under ``env`` (what `score` and `serve` do)."""
    from serendip.errors import SerendipError
    from serendip.platform import features

    with mock.patch.dict(os.environ):          # restored whole on exit
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        try:
            features.prepare_repo(wd)
            features.open_store(wd)
            return 0, ""
        except SerendipError as e:
            return 2, str(e)


# ---------------------------------------------------------------- running and rendering
def run_case(case: Case, wd: Path) -> tuple[int, str]:
    """(exit code, stderr) of one case, with ``wd`` built and substituted."""
    if case.build is not None:
        case.build(wd)
    if case.run is not None:
        return case.run(wd)
    from serendip.cli import main

    argv = [a.replace("{wd}", str(wd)) for a in case.argv]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:          # argparse errors
            code = int(e.code or 0)
    return code, err.getvalue()


def normalise(message: str, wd: Path) -> str:
    """The message as the doc shows it: the temporary directory becomes ``<wd>``."""
    text = message.strip().replace(str(wd), "<wd>")
    return re.sub(r"/tmp/\S*?/(?=\S)", "<tmp>/", text)


def render_row(case: Case, message: str) -> str:
    cmd = "serendip " + " ".join(case.argv).replace("{wd}", "<wd>") if case.argv else "(see test)"
    cells = [case.name, case.what, f"`{cmd}`", str(case.code), f"`{message}`"]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


HEADER = """# Bad-input catalogue

Every input error the CLI and the servers answer: the user's mistake, the command, the exit code
(CLI) or HTTP status (servers), and the one-line message. Generated from the cases in
`tests/test_bad_inputs.py`, which run each one and check that its row here is current.
Regenerate with `{regen}`.

`<wd>` is the work directory the case built.
"""


def render_doc(messages: dict[str, str]) -> str:
    out = [HEADER.format(regen=REGENERATE)]
    sections: dict[str, list[Case]] = {}
    for case in CASES:
        sections.setdefault(case.section, []).append(case)
    for section, cases in sections.items():
        out += [f"## {section} ({len(cases)} cases)", "",
                "| case | mistake | command | exit / HTTP | message |", "|---|---|---|---|---|"]
        out += [render_row(c, messages[c.name]) for c in cases]
        out.append("")
    out.append(f"{len(CASES)} cases in all.")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- tests
def test_case_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path):
    wd = tmp_path / "wd"
    code, err = run_case(case, wd)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == case.code, f"exit {code}, stderr:\n{err}"
    assert len(lines) == 1, f"want one line, got:\n{err}"
    msg = lines[0]
    assert case.field in msg, f"{case.field!r} not named in {msg!r}"
    assert "fix" in msg, f"no fix in {msg!r}"
    assert "Traceback" not in err
    row = render_row(case, normalise(msg, wd))
    doc = DOC.read_text() if DOC.exists() else ""
    if row not in doc.splitlines():
        pytest.fail(f"docs/bad-inputs.md is out of date for {case.name} (fix: run "
                    f"`{REGENERATE}`); the row now reads:\n{row}")


def test_doc_lists_exactly_these_cases():
    doc = DOC.read_text()
    listed = [n for n in re.findall(r"^\| ([a-z0-9-]+) \|", doc, flags=re.M) if n != "case"]
    assert sorted(listed) == sorted(c.name for c in CASES), f"fix: run `{REGENERATE}`"


def write_doc() -> None:
    messages = {}
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            wd = Path(tmp) / "wd"
            code, err = run_case(case, wd)
            lines = [ln for ln in err.strip().splitlines() if ln.strip()]
            messages[case.name] = normalise(lines[-1] if lines else f"(exit {code}, no message)",
                                            wd)
            print(f"{case.name}: exit {code}: {messages[case.name]}")
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render_doc(messages))
    print(f"wrote {DOC} ({len(CASES)} cases)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    write_doc()
