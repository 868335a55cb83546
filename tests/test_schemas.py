import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serendip.data.io import read_table, table_path, write_table
from serendip.data.schemas import SCHEMAS, validate
from serendip.errors import SchemaError


def _items(**over):
    cols = {"item_id": ["a", "b"], "title": ["t1", "t2"],
            "created_at": pa.array([0, 1], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "duration_s": [10.0, 20.0], "thumbnail": ["x.png", "y.png"],
            "frames": [["x.png"], ["y.png"]], "impressions": [5, 3]}
    cols.update(over)
    return pa.table({k: v for k, v in cols.items() if v is not None})


def _inter(**over):
    cols = {"user_id": ["u"], "context_item_id": ["a"], "next_item_id": ["b"],
            "satisfaction": [0.5],
            "ts": pa.array([0], pa.int64()).cast(pa.timestamp("us", tz="UTC"))}
    cols.update(over)
    return pa.table(cols)


def test_every_table_has_a_schema():
    assert set(SCHEMAS) == {"items", "interactions", "clusters", "item_clusters", "examples",
                            "item_serendipity"}


def test_valid_items_round_trip_and_cast(tmp_path):
    t = _items(impressions=pa.array([5, 3], pa.int32()))  # int32 is safely cast to int64
    write_table(tmp_path, "items", t)
    back = read_table(tmp_path, "items")
    assert back.schema.equals(SCHEMAS["items"])
    assert back.column("impressions").to_pylist() == [5, 3]


def test_missing_column_names_table_column_and_fix():
    with pytest.raises(SchemaError) as e:
        validate("items", _items(title=None))
    assert e.value.table == "items" and e.value.column == "title"
    assert "add column 'title'" in str(e.value)


def test_optional_columns_are_filled():
    out = validate("items", _items(duration_s=None, created_at=None))
    assert out.column("duration_s").null_count == 2


def test_wrong_type():
    with pytest.raises(SchemaError, match=r"items.impressions.*expected int64"):
        validate("items", _items(impressions=["many", "few"]))


def test_null_id():
    with pytest.raises(SchemaError, match=r"items.item_id: has 1 null"):
        validate("items", _items(item_id=["a", None]))


def test_duplicate_id():
    with pytest.raises(SchemaError, match=r"duplicate values \(e.g. 'a'\)"):
        validate("items", _items(item_id=["a", "a"]))


def test_satisfaction_out_of_range():
    with pytest.raises(SchemaError, match=r"interactions.satisfaction.*outside \[0.0, 1.0\]"):
        validate("interactions", _inter(satisfaction=[1.5]))


def test_dangling_item_id():
    msg = r"interactions.next_item_id: 1 row\(s\) reference unknown items.item_id \(e.g. 'zz'\)"
    with pytest.raises(SchemaError, match=msg):
        validate("interactions", _inter(next_item_id=["zz"]), refs={"items": _items()})


def test_media_may_be_bytes():
    out = validate("items", _items(thumbnail=pa.array([b"\x89PNG", b"\x89PNG"], pa.binary())))
    assert out.column("thumbnail").type == pa.binary()


def test_csv_is_read_with_list_and_timestamp_columns(tmp_path):
    (tmp_path / "items.csv").write_text(
        "item_id,title,created_at,duration_s,thumbnail,frames,impressions\n"
        "a,hello,2026-01-02T03:04:05,12.5,a.png,a0.png;a1.png,7\n")
    t = read_table(tmp_path, "items")
    assert t.column("frames").to_pylist() == [["a0.png", "a1.png"]]
    assert t.column("created_at").type == pa.timestamp("us", tz="UTC")


def test_corrupt_table_is_a_clear_error(tmp_path):
    table_path(tmp_path, "items").write_bytes(b"not parquet at all")
    with pytest.raises(SchemaError, match="corrupt"):
        read_table(tmp_path, "items")


def test_missing_table_is_a_clear_error(tmp_path):
    with pytest.raises(SchemaError, match="items.parquet or items.csv") as e:
        read_table(tmp_path, "items")
    assert "synth" not in str(e.value)   # never advise overwriting the user's data


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    write_table(tmp_path, "items", _items())
    before = table_path(tmp_path, "items").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError):
        write_table(tmp_path, "items", _items(title=["new", "new"]))
    assert table_path(tmp_path, "items").read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))
    # and an invalid table never reaches the disk
    with pytest.raises(SchemaError):
        write_table(tmp_path, "items", _items(item_id=["a", "a"]))
    assert table_path(tmp_path, "items").read_bytes() == before


# ---------------------------------------------------------------- issue 12, case 1: ids verbatim
ID_CSV = ("item_id,title,impressions\n"
          "001,1984,5\n002,NA,3\n1e3,x,1\n"
          "12345678901234567890,y,1\n12345678901234567891,z,1\n")
VERBATIM = ["001", "002", "1e3", "12345678901234567890", "12345678901234567891"]


def test_csv_ids_and_titles_are_read_verbatim(tmp_path):
    (tmp_path / "items.csv").write_text(ID_CSV)
    t = read_table(tmp_path, "items")
    assert t.column("item_id").to_pylist() == VERBATIM    # was 1, 2, 1000, 1.2345e19 (dup)
    assert t.column("title").to_pylist() == ["1984", "NA", "x", "y", "z"]


def test_every_id_column_of_every_csv_table_is_verbatim(tmp_path):
    from serendip.data.schemas import SCHEMAS

    ids = ["001", "1e3"]
    (tmp_path / "items.csv").write_text("item_id,title,impressions\n001,a,1\n1e3,b,2\n")
    (tmp_path / "interactions.csv").write_text(
        "user_id,context_item_id,next_item_id,satisfaction,ts\n"
        "007,001,1e3,0.5,1767261600\n")
    (tmp_path / "clusters.csv").write_text(
        "cluster_id,level,parent_id,description,size,traffic\n"
        "01,1,,alpha,1,1\n1e1,2,01,beta,1,1\n")
    (tmp_path / "item_serendipity.csv").write_text(
        "item_id,cluster_ids,descriptions,scores,model_version,content_hash,scored_at\n"
        "001,01;1e1,alpha;beta,0.5;0.25,007,00ff,2026-01-01T10:00:00\n")
    items = read_table(tmp_path, "items")
    assert items.column("item_id").to_pylist() == ids
    inter = read_table(tmp_path, "interactions", refs={"items": items})
    assert inter.to_pylist()[0] | {"ts": None} == {
        "user_id": "007", "context_item_id": "001", "next_item_id": "1e3",
        "satisfaction": 0.5, "ts": None}
    cl = read_table(tmp_path, "clusters")
    assert cl.column("cluster_id").to_pylist() == ["01", "1e1"]
    assert cl.column("parent_id").to_pylist() == [None, "01"]
    ser = read_table(tmp_path, "item_serendipity", refs={"items": items}).to_pylist()[0]
    assert ser["cluster_ids"] == ["01", "1e1"] and ser["model_version"] == "007"
    id_columns = {f.name for s in SCHEMAS.values() for f in s if f.name.endswith("_id")}
    assert id_columns <= {f.name for s in SCHEMAS.values() for f in s
                          if pa.types.is_string(f.type)}


def test_distinct_long_ids_are_not_reported_as_duplicates(tmp_path):
    from serendip.cli import main

    (tmp_path / "items.csv").write_text(ID_CSV)
    assert main(["validate", "--data", str(tmp_path)]) == 0


def test_parquet_integer_ids_become_their_decimal_digits(tmp_path):
    pq.write_table(_items(item_id=pa.array([7, 12345678901234567890], pa.uint64())),
                   table_path(tmp_path, "items"))
    assert read_table(tmp_path, "items").column("item_id").to_pylist() == [
        "7", "12345678901234567890"]


@pytest.mark.parametrize("col", ["item_id", "title", "thumbnail"])
def test_parquet_float_text_columns_are_refused(col):
    with pytest.raises(SchemaError, match=rf"items.{col}: has type double.*fix: write '{col}' "
                                          "as strings"):
        validate("items", _items(**{col: [1.0, 1e20]}))


def test_float_ids_in_other_tables_are_refused():
    with pytest.raises(SchemaError, match="interactions.user_id: has type double"):
        validate("interactions", _inter(user_id=[1.0]))


# ------------------------------------------------------- issue 12, case 2: integer timestamps
def test_integer_timestamps_are_unix_seconds():
    out = validate("interactions", _inter(ts=pa.array([1_767_261_600], pa.int64())))
    assert out.column("ts").to_pylist()[0].isoformat() == "2026-01-01T10:00:00+00:00"


def test_csv_integer_timestamps_are_unix_seconds(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title,impressions,created_at\n"
                                        "a,t,1,1767261600\nb,u,2,\n")
    got = read_table(tmp_path, "items").column("created_at").to_pylist()
    assert got[0].isoformat() == "2026-01-01T10:00:00+00:00" and got[1] is None


@pytest.mark.parametrize("value,unit", [(1_767_261_600_000, "milliseconds"),
                                        (1_767_261_600_000_000, "microseconds"),
                                        (1_767_261_600_000_000_000, "nanoseconds")])
def test_integer_timestamps_that_are_not_seconds_are_refused(value, unit):
    with pytest.raises(SchemaError, match=rf"interactions.ts: has integer {value}.*{unit}.*fix: "
                                          "divide 'ts' by"):
        validate("interactions", _inter(ts=pa.array([value], pa.int64())))


@pytest.mark.parametrize("table,col", [("items", "created_at"), ("interactions", "ts"),
                                       ("item_serendipity", "scored_at")])
def test_every_timestamp_column_reads_integers_as_seconds(table, col):
    base = {"items": _items(), "interactions": _inter(),
            "item_serendipity": pa.table({"item_id": ["a"], "cluster_ids": [["c"]],
                                          "descriptions": [["d"]], "scores": [[0.5]],
                                          "model_version": ["m"], "content_hash": ["h"],
                                          "scored_at": [0]})}[table]
    t = base.set_column(base.schema.get_field_index(col), col,
                        pa.array([1_767_261_600] * base.num_rows, pa.int64()))
    assert validate(table, t).column(col)[0].as_py().year == 2026
    t = t.set_column(t.schema.get_field_index(col), col,
                     pa.array([1_767_261_600_000] * base.num_rows, pa.int64()))
    with pytest.raises(SchemaError, match=f"{table}.{col}: .*milliseconds"):
        validate(table, t)


def test_float_timestamps_are_refused():
    with pytest.raises(SchemaError, match="interactions.ts: has type double, expected a timestamp"):
        validate("interactions", _inter(ts=[1_767_261_600.5]))


@pytest.mark.parametrize("text,iso", [
    ("2026-01-01T10:00:00", "2026-01-01T10:00:00+00:00"),
    ("2026-01-01 10:00:00", "2026-01-01T10:00:00+00:00"),
    ("2026-01-01T12:00:00+02:00", "2026-01-01T10:00:00+00:00"),
    ("2026-01-01T10:00:00Z", "2026-01-01T10:00:00+00:00"),
    ("2026-01-01", "2026-01-01T00:00:00+00:00"),
])
def test_iso_text_timestamps(text, iso):
    out = validate("interactions", _inter(ts=[text]))
    assert out.column("ts")[0].as_py().isoformat() == iso


def test_naive_parquet_timestamps_are_utc():
    ts = pa.array([1_767_261_600], pa.int64()).cast(pa.timestamp("s"))
    assert validate("interactions", _inter(ts=ts)).column("ts")[0].as_py().hour == 10


def test_unparseable_timestamp_text_is_refused():
    with pytest.raises(SchemaError, match=r"interactions.ts: has text that is not a timestamp "
                                          r"\(e.g. 'yesterday'\)"):
        validate("interactions", _inter(ts=["yesterday"]))


# ------------------------------------------------------- issue 12, case 3: one table finder
def test_csv_newer_than_parquet_is_an_error_not_ignored(tmp_path):
    import os

    write_table(tmp_path, "items", _items())
    (tmp_path / "items.csv").write_text("item_id,title,impressions\nz,t,1\n")
    os.utime(table_path(tmp_path, "items"), (1, 1))
    with pytest.raises(SchemaError, match="items: both .*items.parquet and the newer items.csv"):
        read_table(tmp_path, "items")
    os.utime(tmp_path / "items.csv", (0, 0))          # parquet newer: it is the one read
    assert read_table(tmp_path, "items").column("item_id").to_pylist() == ["a", "b"]


def test_csv_empty_cell_is_null_quoted_empty_is_text(tmp_path):
    (tmp_path / "items.csv").write_text('item_id,title,impressions,thumbnail\na,t,1,\nb,"",2,""\n')
    t = read_table(tmp_path, "items")
    assert t.column("thumbnail").to_pylist() == [None, ""]
    assert t.column("title").to_pylist() == ["t", ""]


def test_csv_number_that_is_not_a_number_names_the_value(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title,impressions\na,t,NA\n")
    with pytest.raises(SchemaError, match=r"items.impressions: has type string with value 'NA'"):
        read_table(tmp_path, "items")


# ------------------------------------------------------- checks a client's table can fail
def test_empty_ids_are_refused(tmp_path):
    (tmp_path / "items.csv").write_text('item_id,title,impressions\n"",t,1\nv2,u,2\n')
    with pytest.raises(SchemaError, match=r"items.item_id: has 1 empty id\(s\)"):
        read_table(tmp_path, "items")


def test_item_clusters_must_name_known_clusters():
    clusters = pa.table({"cluster_id": ["a1", "a2", "a3", "a4"], "level": [1, 2, 3, 4]})
    ic = pa.table({"item_id": ["a"], "c1": ["a1"], "c2": ["a2"], "c3": ["zz"], "c4": ["a4"]})
    with pytest.raises(SchemaError, match=r"item_clusters.c3: 1 row\(s\) reference unknown "
                                          r"clusters.cluster_id \(e.g. 'zz'\)"):
        validate("item_clusters", ic, refs={"items": _items(), "clusters": clusters})


def test_pandas_nanosecond_timestamps_and_categorical_ids():
    import pandas as pd

    df = pd.DataFrame({"user_id": pd.Categorical(["007"]), "context_item_id": ["001"],
                       "next_item_id": ["002"], "satisfaction": [0.5],
                       "ts": pd.to_datetime(["2026-01-01 10:00:00.123456789"])})
    out = validate("interactions", pa.Table.from_pandas(df)).to_pylist()[0]
    assert out["user_id"] == "007" and out["ts"].microsecond == 123456


def test_a_parquet_dataset_directory_is_a_table(tmp_path):
    """Spark and pyarrow write a table as a directory of part files."""
    d = table_path(tmp_path, "items")
    d.mkdir()
    pq.write_table(_items(), d / "part-0000.parquet")
    pq.write_table(_items(item_id=["c", "d"]), d / "part-0001.parquet")
    assert sorted(read_table(tmp_path, "items").column("item_id").to_pylist()) == ["a", "b", "c",
                                                                                    "d"]
