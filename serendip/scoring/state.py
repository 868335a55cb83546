"""Scoring on pipeline inputs (CLI / KFP): the persistent state directory, the stage body, shard
merging and the new-item placement step."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from serendip.data.io import atomic_write_bytes, find_table, has_table, read_table, table_path, write_table
from serendip.data.media import MEDIA_BASE_FILE, media_root
from serendip.errors import SerendipError
from serendip.scoring.config import ScoringConfig
from serendip.scoring.failures import ERRORS_FILE, write_errors
from serendip.scoring.loop import ScoringResult, score_items
from serendip.tree.placement import add_new_items


def _same_file(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.read_bytes() == b.read_bytes()


def prepare_state(state_dir: str | os.PathLike, data_dir: str | os.PathLike,
                  tree_dir: str | os.PathLike) -> Path:
    """Lay out a scoring work directory from pipeline inputs: items from ``data_dir``; clusters,
    item_clusters and cluster_tree/ from ``tree_dir``. ``state_dir`` persists across runs (a
    volume): item_serendipity and scoring/ chunks stay there, which is what makes runs
    incremental and a retried pod resume. Items a previous run placed in the *same* tree keep
    their placement."""
    import shutil

    state, data, tree = Path(state_dir), Path(data_dir), Path(tree_dir)
    state.mkdir(parents=True, exist_ok=True)
    if state.resolve() == data.resolve() == tree.resolve():
        return state
    same_tree = _same_file(state / "cluster_tree" / "tree.json", tree / "cluster_tree" / "tree.json")
    extra = None
    if same_tree and has_table(state, "item_clusters"):
        extra = read_table(state, "item_clusters")
    src_items = find_table(data, "items")                   # parquet or CSV
    if src_items.resolve() != table_path(state, "items").resolve():
        if src_items.suffix == ".parquet" and src_items.is_file():
            shutil.copyfile(src_items, state / ".items.parquet.tmp")
            os.replace(state / ".items.parquet.tmp", table_path(state, "items"))
        else:
            write_table(state, "items", read_table(data, "items"))
        # the items' relative media paths stay relative to the data directory
        atomic_write_bytes(state / MEDIA_BASE_FILE, str(media_root(data).resolve()).encode())
    for name in ("clusters", "item_clusters"):
        src, dst = table_path(tree, name), table_path(state, name)
        if src.resolve() != dst.resolve():
            write_table(state, name, read_table(tree, name))
    if (tree / "cluster_tree").resolve() != (state / "cluster_tree").resolve():
        tmp = state / ".cluster_tree.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(tree / "cluster_tree", tmp)
        shutil.rmtree(state / "cluster_tree", ignore_errors=True)
        os.replace(tmp, state / "cluster_tree")
    for src in (tree, data):          # level and δ of the candidates (score_items)
        if (src / "curation.json").is_file() and \
                (src / "curation.json").resolve() != (state / "curation.json").resolve():
            atomic_write_bytes(state / "curation.json", (src / "curation.json").read_bytes())
            break
    if extra is not None:
        ic = read_table(state, "item_clusters")
        known = set(ic.column("item_id").to_pylist())
        keep = extra.filter(pa.array([i not in known for i in extra.column("item_id").to_pylist()]))
        if keep.num_rows:
            write_table(state, "item_clusters", pa.concat_tables([ic, keep]))
    return state


def scoring_stage(data_dir: str | os.PathLike, tree_dir: str | os.PathLike,
                  state_dir: str | os.PathLike, predictor, cfg: ScoringConfig | None = None,
                  out_dir: str | os.PathLike | None = None, *,
                  progress: bool = True) -> ScoringResult:
    """Score in ``state_dir`` (see :func:`prepare_state`) and copy item_serendipity.parquet and
    item_clusters.parquet to ``out_dir`` — the KFP component's body."""
    import shutil

    state = prepare_state(state_dir, data_dir, tree_dir)
    result = score_items(state, predictor, cfg, progress=progress)
    if out_dir is not None and Path(out_dir).resolve() != state.resolve():
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("item_serendipity", "item_clusters", "clusters"):
            shutil.copyfile(table_path(state, name), table_path(out, name))
        if (state / ERRORS_FILE).exists():
            shutil.copyfile(state / ERRORS_FILE, out / ERRORS_FILE)
    return result


def merge_shards(part_dirs: list[str | os.PathLike], out_dir: str | os.PathLike) -> dict:
    """Join sharded scoring outputs: item_serendipity rows are disjoint across shards (checked),
    item_clusters rows are unioned, clusters are the same tree (the first one is kept)."""
    import shutil

    if not part_dirs:
        raise SerendipError("no scoring shards to merge", field="parts",
                            fix="run at least one score_shard task")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores = pa.concat_tables([read_table(p, "item_serendipity") for p in part_dirs])
    ids = scores.column("item_id")
    import pyarrow.compute as pc

    if pc.count_distinct(ids).as_py() != len(ids):
        raise SerendipError("shards scored overlapping items", field="parts",
                            fix="give every score_shard the same num_shards")
    ic = pa.concat_tables([read_table(p, "item_clusters") for p in part_dirs])
    ic = ic.take(np.unique(np.asarray(ic.column("item_id").to_pylist()), return_index=True)[1])
    write_table(out, "item_serendipity", scores)
    errors = [pq.read_table(Path(p) / ERRORS_FILE) for p in part_dirs
              if (Path(p) / ERRORS_FILE).exists()]
    write_errors(out, pa.concat_tables(errors).to_pylist() if errors else [])
    write_table(out, "item_clusters", ic)
    shutil.copyfile(table_path(part_dirs[0], "clusters"), table_path(out, "clusters"))
    return {"shards": len(part_dirs), "rows": scores.num_rows, "item_clusters": ic.num_rows}


def place_new_items(data_dir: str | os.PathLike, tree_dir: str | os.PathLike,
                    out_dir: str | os.PathLike) -> dict:
    """The scoring pipeline's first step: a tree directory whose item_clusters also place the
    items that arrived since the tree was built (nearest centroid per level)."""
    state = prepare_state(out_dir, data_dir, tree_dir)
    items = read_table(state, "items")
    ic = read_table(state, "item_clusters")
    placed = add_new_items(state, items, ic, media_root(state))
    write_table(state, "item_clusters", placed, refs={"items": items})
    return {"items": items.num_rows, "assigned_new_items": placed.num_rows - ic.num_rows}
