"""Hierarchical, traffic-balanced cluster tree with unique natural-language descriptions.

Paper §2: items are organised in a 4-level tree of "equal-sized and traffic-weighted" clusters,
level 1 broadest; every cluster has a unique description the MLLM learns to generate.

The shape: ``branching="auto"`` (default) follows the catalogue size, about
``auto_leaf_items`` (25) items per leaf (:func:`auto_branching`: 6,000 items → 4/4/4/4, never
wider than the paper's 8/8/8/8); ``stats["branching"]`` says what was chosen and why.

Built top-down. For every node:

1. **centroids** — faiss k-means on the node's item embeddings (unweighted, so that a handful of
   viral items do not own the centroids);
2. **balanced assignment** — nearest centroid, then a greedy repair that moves the items with
   the smallest cost increase per unit of traffic from over- to under-loaded children until
   sibling traffic (impressions) is within ``balance_tol`` (max/min), wherever single items
   allow it, while every child keeps enough items to be split further; centroids are then
   recomputed from the members and the assignment repeated. (``assignment="sinkhorn"``
   starts from an entropic optimal-transport plan with equal traffic shares per child
   instead; on the synthetic platform it recovers the latent topics worse: ARI 0.84 vs 0.99
   at level 1.) A child holding an item that alone breaks the bound cannot be balanced; it
   keeps its members and the others are balanced among themselves. ``stats["levelN"]``
   names every sibling group outside the bound with its reason (:func:`balance_achievable`:
   a dominant item, or items too coarse to close the gap); everywhere else max/min <= tol;
3. **descriptions** — :mod:`serendip.descriptions`: Unicode-aware tokens, stop words of the
   common languages, units and numbers never used, phrases ranked by c-TF-IDF among siblings,
   every word in >= ``description_min_share`` of the members (titles or labels), unique by a
   distinguishing term, never a number; ``stats["descriptions"]`` reports the grounding.

Modules: :mod:`~serendip.tree.config` (settings), :mod:`~serendip.tree.kmeans` (balanced
k-means per node), :mod:`~serendip.tree.repair` (greedy balance repair),
:mod:`~serendip.tree.build`, :mod:`~serendip.tree.balance` (statistics),
:mod:`~serendip.tree.cluster_tree` (the object, save/load), :mod:`~serendip.tree.placement`
(new items), :mod:`~serendip.tree.stage` (the work-directory stage).

Cluster ids are path-style (``"3.1.0.2"``: a level-l id extends its parent's). New items are
placed with :func:`assign_items` (nearest centroid per level, top-down, given embeddings) or
:func:`assign_new_items` (which first embeds them with the :class:`~serendip.embeddings.Embedder`
saved beside the tree); batch scoring places the items it has not seen with the latter
(:func:`add_new_items`), so there is one placement path. The tree saves as ``tree.json`` +
``centroids.safetensors`` (no pickle).
"""

from __future__ import annotations

from serendip.tree.balance import balance_achievable, balance_stats, balanceable_ratio
from serendip.tree.build import MAX_AUTO_BRANCHING, auto_branching, build_cluster_tree
from serendip.tree.cluster_tree import CENTROIDS_FILE, EMBEDDER_SUBDIR, TREE_DIR, TREE_JSON, ClusterTree
from serendip.tree.config import LEVELS, ClusterConfig, parse_branching
from serendip.tree.kmeans import kmeans_centroids, kmeans_plusplus, sinkhorn, split_node
from serendip.tree.placement import add_new_items, assign_items, assign_new_items, tree_path
from serendip.tree.repair import balance_assignment
from serendip.tree.stage import cluster_stage

__all__ = [
    "CENTROIDS_FILE", "EMBEDDER_SUBDIR", "LEVELS", "MAX_AUTO_BRANCHING", "TREE_DIR", "TREE_JSON",
    "ClusterConfig", "ClusterTree", "add_new_items", "assign_items", "assign_new_items", "auto_branching",
    "balance_achievable", "balance_assignment", "balance_stats", "balanceable_ratio",
    "build_cluster_tree", "cluster_stage", "kmeans_centroids",
    "kmeans_plusplus", "parse_branching", "sinkhorn", "split_node", "tree_path",
]
