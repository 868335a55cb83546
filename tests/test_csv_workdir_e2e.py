"""Issue 12 end to end: a user's own CSV logs — ids with leading zeros, Unix-second timestamps,
no media at all — go through every verb by default: validate, cluster, curate (adapts to the
text prompt), finetune, score, and the serving catalogue sees every item."""

from __future__ import annotations

import json

import pytest

from serendip.cli import main
from serendip.data.io import read_table


@pytest.mark.slow
def test_csv_text_only_workdir_through_every_verb(synth_dir, tmp_path, capsys):
    items = read_table(synth_dir, "items")
    inter = read_table(synth_dir, "interactions")
    ids = {i: f"{k:04d}" for k, i in enumerate(items.column("item_id").to_pylist())}
    wd = tmp_path / "logs"
    wd.mkdir()
    with open(wd / "items.csv", "w") as f:
        f.write("item_id,title,impressions\n")
        for row in items.select(["item_id", "title", "impressions"]).to_pylist():
            f.write(f'{ids[row["item_id"]]},"{row["title"]}",{row["impressions"]}\n')
    with open(wd / "interactions.csv", "w") as f:
        f.write("user_id,context_item_id,next_item_id,satisfaction,ts\n")
        for r in inter.to_pylist():
            f.write(f"{r['user_id']},{ids[r['context_item_id']]},{ids[r['next_item_id']]},"
                    f"{r['satisfaction']},{int(r['ts'].timestamp())}\n")

    assert main(["validate", "--data", str(wd)]) == 0
    assert main(["cluster", "--data", str(wd), "--branching", "2/2/3/2"]) == 0
    capsys.readouterr()
    assert main(["curate", "--data", str(wd)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["prompt"]["strategy"] == "text"
    assert main(["finetune", "--workdir", str(wd), "--set", "steps=4", "--set", "eval_every=4",
                 "--no-register", "--quiet"]) == 0
    model = next(p for p in (wd / "mllm").iterdir() if not p.name.startswith("."))
    capsys.readouterr()
    assert main(["score", "--workdir", str(wd), "--model", str(model), "--no-feast", "--quiet",
                 "--coverage", "0.3"]) == 0
    scored = read_table(wd, "item_serendipity").column("item_id").to_pylist()
    assert scored and all(len(i) == 4 and i.isdigit() for i in scored)   # "0042", not 42
    assert set(read_table(wd, "item_clusters").column("item_id").to_pylist()) == set(ids.values())

    from serendip.platform.serving.lookup import ItemCatalog

    assert len(ItemCatalog(wd)) == items.num_rows
