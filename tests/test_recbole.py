"""RecBole atomic-file importer (issue 14 item 1) on the committed ml-100k subset and on
hand-made files."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from serendip.cli import main
from serendip.data.recbole import RecBoleImportConfig, import_recbole, read_item_labels
from serendip.errors import SchemaError

SUBSET = Path(__file__).parent / "data" / "ml-100k-subset"


def _write(d: Path, inter: str, item: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "x.inter").write_text(inter)
    (d / "x.item").write_text(item)
    return d


ITEM = ("item_id:token\tmovie_title:token_seq\tclass:token_seq\n"
        "007\tSpy Film\tAction Thriller\n"
        "1e3\tTiny Story\tComedy\n"
        "A 1\tThird Thing\t\n")


def test_subset_ships_its_terms():
    readme = (SUBSET / "README.md").read_text()
    assert "research use only" in readme and "Harper" in readme


def test_subset_import_validates_and_matches_the_files(tmp_path):
    out = tmp_path / "out"
    assert main(["import", "recbole", "--src", str(SUBSET), "--out", str(out)]) == 0
    assert main(["validate", "--data", str(out)]) == 0
    items = pq.read_table(out / "items.parquet")
    inter = pq.read_table(out / "interactions.parquet")
    lines = (SUBSET / "ml-100k-subset.inter").read_text().splitlines()[1:]
    users = {ln.split("\t")[0] for ln in lines}
    # one (context → next) pair per record except each user's first
    assert inter.num_rows == len(lines) - len(users)
    sat = inter.column("satisfaction").to_numpy()
    assert sat.min() >= 0.0 and sat.max() <= 1.0 and sat.min() == 0.0 and sat.max() == 1.0
    # impressions = records per item
    counts: dict[str, int] = {}
    for ln in lines:
        counts[ln.split("\t")[1]] = counts.get(ln.split("\t")[1], 0) + 1
    got = dict(zip(items.column("item_id").to_pylist(), items.column("impressions").to_pylist()))
    assert got == counts
    titles = dict(zip(items.column("item_id").to_pylist(), items.column("title").to_pylist()))
    assert titles["1"] == "Toy Story"
    labels = read_item_labels(out)
    lab = dict(zip(labels.column("item_id").to_pylist(), labels.column("labels").to_pylist()))
    assert lab["1"] == ["Animation", "Children's", "Comedy"]


def test_ids_verbatim_order_by_time_then_line_and_rating_scale(tmp_path):
    inter = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
             "u01\t1e3\t5\t200\n"      # line 2
             "u01\t007\t1\t100\n"      # line 3: earliest
             "u01\tA 1\t3\t200\n"      # line 4: same second as line 2, later line
             "2\t007\t4\t50\n")
    src = _write(tmp_path / "src", inter, ITEM)
    summary = import_recbole(src, tmp_path / "out")
    assert summary["satisfaction"] == "(rating - 1) / (5 - 1)"
    items = pq.read_table(tmp_path / "out" / "items.parquet")
    assert items.column("item_id").to_pylist() == ["007", "1e3", "A 1"]
    t = pq.read_table(tmp_path / "out" / "interactions.parquet").to_pylist()
    pairs = [(r["user_id"], r["context_item_id"], r["next_item_id"], r["satisfaction"])
             for r in t]
    # u01: 007 (t=100) → 1e3 (t=200, line 2) → A 1 (t=200, line 4); user "2" has one record
    assert pairs == [("u01", "007", "1e3", 1.0), ("u01", "1e3", "A 1", 0.5)]
    assert t[0]["ts"].timestamp() == 200
    # a declared scale overrides the file's min/max
    import_recbole(src, tmp_path / "out2", RecBoleImportConfig(rating_scale=(0, 5)))
    sat = pq.read_table(tmp_path / "out2" / "interactions.parquet").column("satisfaction")
    assert sat.to_pylist() == [1.0, 0.6]


def test_implicit_feedback_without_rating(tmp_path):
    inter = "user_id:token\titem_id:token\ttimestamp:float\nu\t007\t1\nu\t1e3\t2\n"
    summary = import_recbole(_write(tmp_path / "s", inter, ITEM), tmp_path / "o")
    assert summary["satisfaction"].startswith("1.0")
    assert pq.read_table(tmp_path / "o" / "interactions.parquet").column(
        "satisfaction").to_pylist() == [1.0]


HDR = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


@pytest.mark.parametrize("inter,item,where", [
    (HDR + "u\t007\t5\t1\nu\t007\tfive\t2\n", ITEM, "x.inter:3:rating"),
    (HDR + "u\t007\t5\t1\nu\t007\t5\n", ITEM, "x.inter:3"),
    (HDR + "u\t007\t5\tnan\n", ITEM, "x.inter:2:timestamp"),
    (HDR + "u\t999\t5\t1\n", ITEM, "x.inter:2:item_id"),
    (HDR + "\t007\t5\t1\n", ITEM, "x.inter:2:user_id"),
    ("user_id\titem_id:token\n", ITEM, "x.inter:1:user_id"),
    (HDR + "u\t007\t5\t1\n", ITEM + "007\tAgain\tDrama\n", "x.item:5:item_id"),
    ("user_id:token\titem_id:token\trating:float\n", ITEM, "timestamp"),
    (HDR, "item_id:token\tyear:token\n", "x.item"),
])
def test_bad_files_name_file_line_and_field(tmp_path, capsys, inter, item, where):
    src = _write(tmp_path / "src", inter, item)
    with pytest.raises(SchemaError) as e:
        import_recbole(src, tmp_path / "out")
    assert where in str(e.value)
    assert main(["import", "recbole", "--src", str(src), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and where in err[0] and "fix:" in err[0]
    assert not (tmp_path / "o" / "items.parquet").exists()


def test_rating_outside_declared_scale(tmp_path):
    src = _write(tmp_path / "s", HDR + "u\t007\t7\t1\n", ITEM)
    with pytest.raises(SchemaError, match="x.inter:2:rating"):
        import_recbole(src, tmp_path / "o", RecBoleImportConfig(rating_scale=(1, 5)))


def test_missing_files_and_named_fields(tmp_path):
    with pytest.raises(SchemaError, match=r"\.inter"):
        import_recbole(tmp_path, tmp_path / "o")
    src = _write(tmp_path / "s", HDR + "u\t007\t5\t1\n", ITEM)
    with pytest.raises(SchemaError, match="x.item:name"):
        import_recbole(src, tmp_path / "o", RecBoleImportConfig(title_field="name"))
    assert main(["import", "recbole", "--src", str(src), "--out", str(tmp_path / "o"),
                 "--title-field", "class", "--label-field", ""]) == 0
    items = pq.read_table(tmp_path / "o" / "items.parquet")
    assert items.column("title").to_pylist()[0] == "Action Thriller"
    assert read_item_labels(tmp_path / "o") is None
