"""The demo report's cluster-tree table names what the tree balanced and its achieved ratio."""

import json

import pyarrow as pa
import pyarrow.parquet as pq


def test_tree_table_shows_the_balanced_measure_beside_raw_traffic(tmp_path):
    from serendip.platform.demo.report import _tree_section

    pq.write_table(pa.table({"level": [1, 1], "size": [10, 12], "description": ["a", "b"]}),
                   tmp_path / "clusters.parquet")
    (tmp_path / "cluster_tree").mkdir()
    stats = {"level1": {"balanceable_max_min_traffic_worst": 3.825, "within_tol_share": 0.0,
                        "balanced_on": "impressions^0.5",
                        "achievable_max_min_traffic_worst": 1.027}}
    (tmp_path / "cluster_tree" / "tree.json").write_text(json.dumps({"stats": stats}))
    md, figures = _tree_section(tmp_path)
    row = md.splitlines()[2]
    # raw traffic alone (3.825, none within bound) read as an unbalanced tree; the table now
    # also says the tree balanced impressions^0.5 and reached 1.027 on it
    assert "3.825" in row and "impressions^0.5" in row and "1.027" in row
    assert figures["level1"]["balanced on"] == "impressions^0.5"
