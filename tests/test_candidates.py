"""Serendipitous candidate clusters (paper §2): a property test over random trees, and the
curation stage's training targets checked against them."""

import numpy as np
import pyarrow as pa
import pytest

from serendip.candidates import (
    CandidateIndex,
    candidate_clusters,
    restrict_to_candidates,
    sibling_map,
)
from serendip.errors import ConfigError, SchemaError


def random_tree(rng: np.random.Generator, max_children: int = 4, n_items: int = 60):
    """A random 4-level tree (1..max_children children per node, so single-child parents
    occur), its clusters table, and items assigned to random leaves. Also returns each
    cluster's true path (c1, .., c_level) as generated — the reference for the property."""
    path_of: dict[str, tuple[str, ...]] = {}
    rows = []
    frontier: list[tuple[str, ...]] = [()]
    for level in range(1, 5):
        nxt = []
        for parent in frontier:
            for j in range(int(rng.integers(1, max_children + 1))):
                cid = f"L{level}-{len(path_of)}-{j}"
                path = parent + (cid,)
                path_of[cid] = path
                rows.append((cid, level, parent[-1] if parent else None))
                nxt.append(path)
        frontier = nxt
    order = rng.permutation(len(rows))          # the table's row order carries no meaning
    rows = [rows[i] for i in order]
    clusters = pa.table({"cluster_id": [r[0] for r in rows], "level": [r[1] for r in rows],
                         "parent_id": pa.array([r[2] for r in rows], pa.string()),
                         "description": [f"d {r[0]}" for r in rows],
                         "size": [1] * len(rows), "traffic": [1] * len(rows)})
    leaves = [p for p in frontier]
    picks = rng.integers(0, len(leaves), n_items)
    item_clusters = pa.table({"item_id": [f"i{k}" for k in range(n_items)],
                              **{f"c{lv}": [leaves[p][lv - 1] for p in picks]
                                 for lv in range(1, 5)}})
    return clusters, item_clusters, path_of


@pytest.mark.parametrize("seed", range(40))
def test_candidates_are_exactly_the_siblings_on_random_trees(seed):
    rng = np.random.default_rng(seed)
    clusters, ic, path_of = random_tree(rng)
    for level in range(1, 5):
        at_level = sorted(c for c, p in path_of.items() if len(p) == level)
        for delta in range(1, level + 1):
            index = CandidateIndex.build(ic, clusters, level, delta)
            items = ic.column("item_id").to_pylist()
            own = ic.column(f"c{level}").to_pylist()
            cands = index.candidates(items)
            for c, cand in zip(own, cands):
                anc = path_of[c][level - delta - 1] if level - delta >= 1 else None
                expect = sorted(s for s in at_level if s != c and
                                (anc is None or path_of[s][level - delta - 1] == anc))
                assert cand == expect                       # exactly the siblings
                assert c not in cand                        # never the context's own cluster
                for s in cand:                              # each one satisfies the definition
                    assert s != c
                    if anc is not None:
                        assert path_of[s][level - delta - 1] == anc
                n_under_parent = sum(1 for s in at_level
                                     if anc is None or path_of[s][level - delta - 1] == anc)
                assert (len(cand) > 0) == (n_under_parent > 1)   # non-empty iff parent has >1
            # the vectorised membership test agrees with the lists, own cluster included
            probe_items = [i for i in items for _ in at_level]
            probe_clusters = at_level * len(items)
            mask = index.is_candidate(probe_items, probe_clusters)
            ref = [s in cand for cand in cands for s in at_level]
            assert mask.tolist() == ref


def test_sibling_map_and_candidate_map_agree():
    clusters, ic, _ = random_tree(np.random.default_rng(3))
    sib = sibling_map(clusters, 3, 1)
    own = dict(zip(ic.column("item_id").to_pylist(), ic.column("c3").to_pylist()))
    cmap = candidate_clusters(ic, clusters, 3, 1)
    assert cmap == {i: sib[c] for i, c in own.items()}


def test_unknown_items_and_clusters_are_never_candidates():
    clusters, ic, _ = random_tree(np.random.default_rng(5))
    index = CandidateIndex.build(ic, clusters, 3, 2)
    some = index.candidates(["i0"])[0]
    assert index.is_candidate(["nope", "i0", "i0"], [some[0] if some else "x", None, "zz"]
                              ).tolist() == [False, False, False]
    assert index.candidates(["nope"]) == [[]]
    assert index.n_candidates(["nope"]).tolist() == [0]


def test_restrict_to_candidates_drops_own_cluster_and_non_siblings():
    clusters, ic, _ = random_tree(np.random.default_rng(11), max_children=3)
    index = CandidateIndex.build(ic, clusters, 4, 1)
    items = ic.column("item_id").to_pylist()
    own = index.own_cluster(items)
    cands = index.candidates(items)
    k = next(j for j, c in enumerate(cands) if c)
    ranked = [[own[k], "not-a-cluster", cands[k][0], cands[k][0]]]
    kept, dropped = restrict_to_candidates(ranked, [items[k]], index)
    assert kept == [[cands[k][0]]] and dropped == 2


def test_bad_level_delta_and_inconsistent_tables_name_the_field():
    clusters, ic, _ = random_tree(np.random.default_rng(1))
    with pytest.raises(ConfigError) as e:
        sibling_map(clusters, 3, 4)
    assert e.value.field == "delta"
    bad = ic.set_column(2, "c2", pa.array(["L9-unknown"] * ic.num_rows))
    with pytest.raises(SchemaError):
        CandidateIndex.build(bad, clusters, 2, 1)


# ------------------------------------------------------------------ curation wiring
@pytest.fixture(scope="module")
def platform(synth_dir):
    from tests.synth_tree import synth_tree

    return synth_tree(synth_dir)


@pytest.mark.parametrize("level,delta", [(3, 1), (4, 2), (2, 2)])
def test_every_curated_training_target_is_a_candidate(platform, level, delta):
    from serendip.curation import CurationConfig, curate

    items, inter, clusters, ic = platform
    res = curate(items, inter, clusters, ic, CurationConfig(level=level, delta=delta))
    sel = res.selected
    index = CandidateIndex.build(ic, clusters, level, delta)
    mask = index.is_candidate(sel.column("context_item_id").to_pylist(),
                              sel.column("target_cluster_id").to_pylist())
    assert sel.num_rows > 0 and mask.all()


def test_curation_refuses_item_clusters_that_contradict_the_tree(platform):
    """item_clusters whose c2 is not the parent of c3 (tables from two different trees) made
    curation call pairs serendipitous that are not siblings in the clusters table; now it
    names the table and the fix."""
    from serendip.curation import CurationConfig, curate

    items, inter, clusters, ic = platform
    c2 = ic.column("c2").to_pylist()
    shuffled = [c2[(k + 1) % len(c2)] for k in range(len(c2))]     # break the c2 → c3 link
    bad = ic.set_column(ic.schema.get_field_index("c2"), "c2", pa.array(shuffled, pa.string()))
    with pytest.raises(SchemaError) as e:
        curate(items, inter, clusters, bad, CurationConfig(level=3, delta=1))
    assert "item_clusters" in str(e.value)
