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
    with pytest.raises(SchemaError, match="run the stage that writes 'items'"):
        read_table(tmp_path, "items")


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
