"""Serendipitous candidate clusters of a context item (paper §2).

For a context item v whose level-``l`` cluster is C_l(v), the **candidates** are the level-``l``
clusters that differ from C_l(v) but share its level-``(l − δ)`` cluster — the siblings (δ = 1)
or cousins (δ > 1) of its own cluster. ``l − δ = 0`` means the root: every other level-``l``
cluster. A (context item, next item) pair is serendipitous exactly when the next item's
level-``l`` cluster is one of the context's candidates (:mod:`serendip.curation` keeps only
those pairs), so every training target, every answer the system calls "serendipitous" and
every baseline choice must be a candidate; the context's **own** cluster never is.

Candidates depend only on the context's own cluster, so they are computed once per level-``l``
cluster from the ``clusters`` table (``parent_id`` chain) and gathered per item (integer
codes, no Python loop over items). Everything here is a pure function over the ``clusters``
and ``item_clusters`` tables (schemas in :mod:`serendip.data.schemas`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serendip.errors import ConfigError, SchemaError, SerendipError

LEVELS = 4


def check_level_delta(level: int, delta: int) -> None:
    """Raises:
        ConfigError: ``level`` outside 1..4 or ``delta`` outside 1..level.
    """
    if not 1 <= int(level) <= LEVELS:
        raise ConfigError(f"level={level}", field="level", fix=f"use 1..{LEVELS}")
    if not 1 <= int(delta) <= int(level):
        raise ConfigError(f"delta={delta} with level={level}", field="delta",
                          fix=f"use 1 <= delta <= level (here <= {level})")


def _ancestors(clusters: pa.Table, level: int, delta: int) -> dict[str, str | None]:
    """level-``level`` cluster id → its level-``(level − delta)`` ancestor (None: the root)."""
    ids = clusters.column("cluster_id").to_pylist()
    parent = dict(zip(ids, clusters.column("parent_id").to_pylist()))
    levels = clusters.column("level").to_pylist()
    out: dict[str, str | None] = {}
    for cid, lv in zip(ids, levels):
        if lv != level:
            continue
        node: str | None = cid
        for _ in range(delta):
            if node not in parent:
                raise SchemaError("clusters", "parent_id",
                                  f"cluster {node!r} (ancestor of {cid!r}) is not in the table",
                                  "use the clusters table written by `serendip cluster`")
            node = parent[node]
        if level - delta >= 1 and node is None:
            raise SchemaError("clusters", "parent_id",
                              f"level-{level} cluster {cid!r} has no level-{level - delta} "
                              "ancestor", "every cluster below level 1 needs a parent_id")
        out[cid] = node if level - delta >= 1 else None
    return out


def sibling_map(clusters: pa.Table, level: int = 3, delta: int = 1) -> dict[str, list[str]]:
    """Level-``level`` cluster id → its candidate clusters (sorted ids, itself excluded).

    Args:
        clusters: the ``clusters`` table (cluster_id, level, parent_id, ...).
        level: l, 1..4. delta: δ, 1..l (l − δ = 0: all other level-l clusters).

    Returns:
        One entry per level-``l`` cluster; a cluster whose level-(l − δ) parent has a single
        level-``l`` descendant maps to ``[]``.

    Raises:
        ConfigError: bad ``level`` / ``delta``.
        SchemaError: a broken ``parent_id`` chain.
    """
    check_level_delta(level, delta)
    anc = _ancestors(clusters, level, delta)
    groups: dict[str | None, list[str]] = {}
    for cid in sorted(anc):
        groups.setdefault(anc[cid], []).append(cid)
    return {cid: [s for s in groups[anc[cid]] if s != cid] for cid in sorted(anc)}


@dataclass
class CandidateIndex:
    """Candidates of every clustered item at (``level``, ``delta``), as integer codes.

    ``cluster_ids[own[i]]`` is item ``item_ids[i]``'s level-l cluster; ``members[j]`` are the
    codes of cluster ``j``'s candidates (sorted by id).
    """

    level: int
    delta: int
    item_ids: list[str]
    cluster_ids: list[str]                  # level-l clusters, sorted
    own: np.ndarray                         # int64 [n_items] → code of the item's own cluster
    group: np.ndarray                       # int64 [n_clusters] → code of the l−δ ancestor
    members: list[np.ndarray]               # per cluster code: candidate codes

    @classmethod
    def build(cls, item_clusters: pa.Table, clusters: pa.Table, level: int = 3,
              delta: int = 1) -> CandidateIndex:
        """Raises:
            ConfigError: bad ``level`` / ``delta``.
            SchemaError: an item's level-l cluster is not a level-l row of ``clusters``, or its
                level-(l − δ) cluster is not that cluster's ancestor there.
        """
        sib = sibling_map(clusters, level, delta)
        anc = _ancestors(clusters, level, delta)
        cluster_ids = sorted(sib)
        code = {c: j for j, c in enumerate(cluster_ids)}
        groups = sorted({a for a in anc.values() if a is not None})
        gcode = {g: j for j, g in enumerate(groups)}
        group = np.asarray([gcode.get(anc[c], -1) for c in cluster_ids], dtype=np.int64)
        own_col = item_clusters.column(f"c{level}")
        own_idx = pc.index_in(own_col, value_set=pa.array(cluster_ids, pa.string()))
        own = own_idx.fill_null(-1).to_numpy().astype(np.int64, copy=False)
        if len(own) and own.min() < 0:
            bad = own_col[int(np.argmin(own))].as_py()
            raise SchemaError("item_clusters", f"c{level}",
                              f"cluster {bad!r} is not a level-{level} cluster of the clusters "
                              "table", "use item_clusters and clusters from the same tree")
        if level - delta >= 1:   # the items' own path must agree with the clusters table
            col = item_clusters.column(f"c{level - delta}").to_pylist()
            want = [anc[cluster_ids[j]] for j in own]
            bad = next((k for k, (a, b) in enumerate(zip(col, want)) if a != b), None)
            if bad is not None:
                raise SchemaError("item_clusters", f"c{level - delta}",
                                  f"item {item_clusters.column('item_id')[bad].as_py()!r} has "
                                  f"c{level - delta}={col[bad]!r} but its c{level} "
                                  f"{cluster_ids[own[bad]]!r} lies under {want[bad]!r} in the "
                                  "clusters table",
                                  "use item_clusters and clusters written by the same "
                                  "`serendip cluster` run")
        members = [np.asarray([code[s] for s in sib[c]], dtype=np.int64) for c in cluster_ids]
        return cls(level, delta, item_clusters.column("item_id").to_pylist(), cluster_ids, own,
                   group, members)

    # ------------------------------------------------------------------ queries
    def _codes(self, item_ids: Sequence[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Row codes of ``item_ids`` (−1 for items without clusters); an Arrow column is
        resolved as it is, without a round trip through Python strings."""
        if not isinstance(item_ids, (pa.Array, pa.ChunkedArray)):
            item_ids = pa.array(list(item_ids), pa.string())
        elif item_ids.type != pa.string():
            item_ids = item_ids.cast(pa.string())
        idx = pc.index_in(item_ids, value_set=pa.array(self.item_ids, pa.string()))
        return idx.fill_null(-1).to_numpy().astype(np.int64, copy=False)

    def transition_codes(self, transitions: pa.Table
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(from, to, satisfaction) of logged transitions (``context_item_id``,
        ``next_item_id``, ``satisfaction``): the level-l cluster codes of both items (int64
        [m]) and the satisfaction (float64 [m]), for the m transitions whose two items both
        have clusters."""
        ctx = self._codes(transitions.column("context_item_id"))
        nxt = self._codes(transitions.column("next_item_id"))
        sat = transitions.column("satisfaction").to_numpy().astype(np.float64)
        ok = (ctx >= 0) & (nxt >= 0)
        return self.own[ctx[ok]], self.own[nxt[ok]], sat[ok]

    def own_cluster(self, item_ids: Sequence[str]) -> list[str | None]:
        """Each item's level-l cluster (None for an item without clusters)."""
        rows = self._codes(item_ids)
        return [self.cluster_ids[self.own[r]] if r >= 0 else None for r in rows]

    def candidates(self, item_ids: Sequence[str]) -> list[list[str]]:
        """Each context item's candidate clusters (sorted ids; [] for an unknown item)."""
        rows = self._codes(item_ids)
        return [[self.cluster_ids[j] for j in self.members[self.own[r]]] if r >= 0 else []
                for r in rows]

    def candidate_map(self, item_ids: Sequence[str] | None = None) -> dict[str, list[str]]:
        """context item id → candidate clusters, for ``item_ids`` (default: every item)."""
        ids = self.item_ids if item_ids is None else list(item_ids)
        return dict(zip(ids, self.candidates(ids)))

    def is_candidate(self, context_ids: Sequence[str], cluster_ids: Sequence[str | None]
                     ) -> np.ndarray:
        """bool [n]: is ``cluster_ids[i]`` a candidate of ``context_ids[i]``? Vectorised.

        False for an unknown context item, an unknown or None cluster, and the context's own
        cluster.

        Raises:
            SerendipError: the two sequences differ in length.
        """
        if len(context_ids) != len(cluster_ids):
            raise SerendipError(f"{len(context_ids)} context items but {len(cluster_ids)} "
                                "clusters", field="cluster_ids",
                                fix="pass one cluster per context item")
        rows = self._codes(context_ids)
        cidx = pc.index_in(pa.array(list(cluster_ids), pa.string()),
                           value_set=pa.array(self.cluster_ids, pa.string()))
        cl = cidx.fill_null(-1).to_numpy().astype(np.int64, copy=False)
        ok = (rows >= 0) & (cl >= 0)
        own = np.where(rows >= 0, self.own[np.maximum(rows, 0)], -1)
        return ok & self.is_candidate_code(np.maximum(own, 0), np.maximum(cl, 0)) & (cl != own)

    def is_candidate_code(self, own: np.ndarray, cluster: np.ndarray) -> np.ndarray:
        """bool [n]: is cluster code ``cluster[i]`` a candidate of cluster code ``own[i]``
        (another level-l cluster under the same level-(l − δ) cluster)? Vectorised."""
        own, cluster = np.asarray(own), np.asarray(cluster)
        if self.level - self.delta < 1:
            return own != cluster
        return (own != cluster) & (self.group[own] == self.group[cluster])

    def n_candidates(self, item_ids: Sequence[str]) -> np.ndarray:
        """int64 [n]: number of candidates per context item (0 for an unknown item)."""
        sizes = np.asarray([len(m) for m in self.members], dtype=np.int64)
        rows = self._codes(item_ids)
        return np.where(rows >= 0, sizes[self.own[np.maximum(rows, 0)]], 0)


def candidate_clusters(item_clusters: pa.Table, clusters: pa.Table, level: int = 3,
                       delta: int = 1, context_ids: Sequence[str] | None = None
                       ) -> dict[str, list[str]]:
    """context item id → its serendipitous candidate clusters (paper §2; see the module
    docstring). ``context_ids`` default to every item of ``item_clusters``.

    Raises:
        ConfigError: bad ``level`` / ``delta``.
        SchemaError: item_clusters and clusters are not from the same tree.
    """
    return CandidateIndex.build(item_clusters, clusters, level, delta).candidate_map(context_ids)


def restrict_to_candidates(ranked: Sequence[Sequence[str | None]], context_ids: Sequence[str],
                           index: CandidateIndex) -> tuple[list[list[str]], int]:
    """Keep only candidate clusters in each ranked answer list (order kept, duplicates
    dropped); also returns how many answers were dropped (own cluster, non-sibling, unknown).

    This is the "only serendipitous answers" rule for model outputs produced without it.
    """
    out, dropped = [], 0
    for ctx, answers in zip(context_ids, ranked):
        seen: set[str] = set()
        flat = [a for a in answers]
        mask = index.is_candidate([ctx] * len(flat), flat) if flat else np.zeros(0, bool)
        keep = []
        for a, m in zip(flat, mask):
            if m and a not in seen:
                keep.append(a)
                seen.add(a)
            elif not m:
                dropped += 1
        out.append(keep)
    return out, dropped
