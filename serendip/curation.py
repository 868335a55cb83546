"""Serendipitous pairs and the paper's diversified data curation (§2, §4.1).

A (context item v, next item n) pair from the logs is

* **similar** when v and n share their level-``l`` cluster;
* **serendipitous** when they differ at level ``l`` but share the level ``l - δ`` cluster
  (``l - δ = 0`` means the root: any other level-``l`` cluster).

Diversified curation keeps the serendipitous pairs, groups them by the next item's level-``l``
cluster C(n), aggregates satisfaction per (context item, C(n)) and keeps, for every cluster, the
``top_k`` context items with the highest mean satisfaction — so every cluster gets an equal share
of the training data. Examples are then built for one prompt strategy (:mod:`serendip.prompts`);
:func:`build_examples` can rebuild them for another strategy from the same selection.

The heavy part is vectorised: item ids are resolved to row indices once (Arrow's hash join),
after which classification, aggregation and top-k are integer gathers and one sort in numpy —
10M interactions in seconds (``benchmarks/bench_curation.py`` compares with plain pandas).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serendip.data.schemas import SCHEMAS
from serendip.errors import ConfigError, SchemaError
from serendip.prompts import PromptConfig, build_prompt, prompt_manifest, select_images

LEVELS = 4
SELECTED_SCHEMA = pa.schema([
    ("context_item_id", pa.string()),
    ("target_cluster_id", pa.string()),
    ("satisfaction", pa.float64()),
    ("n_interactions", pa.int64()),
    ("split", pa.string()),
])


@dataclass
class CurationConfig:
    """Which pairs count as serendipitous and how many examples each cluster gets."""

    level: int = field(default=3, metadata={
        "help": "l: the tree level at which context and next item must differ; 1..4"})
    delta: int = field(default=1, metadata={
        "help": "δ: context and next item must share the cluster at level l - δ "
                "(l - δ = 0: the root); 1..level"})
    top_k: int = field(default=10, metadata={
        "help": "context items kept per next-item cluster, by mean satisfaction; >= 1 "
                "(paper: 10)"})
    min_interactions: int = field(default=1, metadata={
        "help": "logged pairs a (context item, cluster) needs to be kept; >= 1"})
    test_fraction: float = field(default=0.2, metadata={
        "help": "held-out share of context items; in [0, 1)"})
    seed: int = field(default=0, metadata={"help": "seed of the held-out split"})
    drop_unknown_items: bool = field(default=False, metadata={
        "help": "drop interactions whose items are not in the tree (false: refuse them)"})
    prompt: PromptConfig | None = field(default=None, metadata={
        "help": "the prompt the examples are built with; null: adapt to the media the "
                "context items have (chain of thought on frames, else on the thumbnail, else "
                "the text prompt; the stats say which and why). A prompt set explicitly is "
                "kept: items lacking its media are refused"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if not 1 <= self.level <= LEVELS:
            raise ConfigError(f"level={self.level}", field="level", fix=f"use 1..{LEVELS}")
        if not 1 <= self.delta <= self.level:
            raise ConfigError(f"delta={self.delta} with level={self.level}", field="delta",
                              fix=f"use 1 <= delta <= level (here <= {self.level})")
        if self.top_k < 1:
            raise ConfigError(f"top_k={self.top_k}", field="top_k", fix="use top_k >= 1")
        if self.min_interactions < 1:
            raise ConfigError(f"min_interactions={self.min_interactions}",
                              field="min_interactions", fix="use min_interactions >= 1")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"test_fraction={self.test_fraction}", field="test_fraction",
                              fix="use a fraction in [0, 1)")
        if self.prompt is not None:
            self.prompt.check()


@dataclass
class CurationResult:
    selected: pa.Table              # SELECTED_SCHEMA
    examples: pa.Table              # schema "examples"
    stats: dict
    candidate_cluster_ids: list[str]
    candidates: list[str]           # descriptions of all level-l clusters (controlled generation)
    prompt: PromptConfig | None = None   # the prompt the examples were built with


class _Coded:
    """Interactions resolved against item_clusters once: item row indices (a hash join done
    by Arrow), then every cluster comparison is an integer gather — no string joins."""

    def __init__(self, interactions: pa.Table, item_clusters: pa.Table, drop_unknown: bool):
        ids = item_clusters.column("item_id")
        ctx = pc.index_in(interactions.column("context_item_id"), value_set=ids)
        nxt = pc.index_in(interactions.column("next_item_id"), value_set=ids)
        ctx_np = ctx.fill_null(-1).to_numpy().astype(np.int64, copy=False)
        nxt_np = nxt.fill_null(-1).to_numpy().astype(np.int64, copy=False)
        sat = interactions.column("satisfaction").to_numpy().astype(np.float64, copy=False)
        known = (ctx_np >= 0) & (nxt_np >= 0)
        self.n_missing = int(len(known) - known.sum())
        if self.n_missing and not drop_unknown:
            first = int(np.argmin(known))
            col = "context_item_id" if ctx_np[first] < 0 else "next_item_id"
            ex = interactions.column(col)[first].as_py()
            raise SchemaError("interactions", "context_item_id/next_item_id",
                              f"{self.n_missing} interaction(s) reference items without clusters "
                              f"(e.g. {ex!r})",
                              "cluster the same items (or assign new items to the tree), or set "
                              "drop_unknown_items=true")
        if self.n_missing:
            self.rows = np.flatnonzero(known)
            ctx_np, nxt_np, sat = ctx_np[known], nxt_np[known], sat[known]
        else:
            self.rows = np.arange(len(known))
        self.ctx, self.nxt, self.sat = ctx_np, nxt_np, sat
        self.item_clusters = item_clusters
        self._levels: dict[int, tuple[np.ndarray, pa.Array]] = {}
        self._masks: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def level(self, lvl: int) -> tuple[np.ndarray, pa.Array]:
        """(cluster code per item row, cluster names) at level ``lvl``."""
        if lvl not in self._levels:
            enc = pc.dictionary_encode(self.item_clusters.column(f"c{lvl}")).combine_chunks()
            self._levels[lvl] = (enc.indices.to_numpy(zero_copy_only=False).astype(np.int64),
                                 enc.dictionary)
        return self._levels[lvl]

    def classify(self, level: int, delta: int) -> tuple[np.ndarray, np.ndarray]:
        """Boolean masks (similar, serendipitous) over the known interactions."""
        if (level, delta) not in self._masks:
            self._masks[(level, delta)] = self._classify(level, delta)
        return self._masks[(level, delta)]

    def _classify(self, level: int, delta: int) -> tuple[np.ndarray, np.ndarray]:
        code, _ = self.level(level)
        cl, nl = code[self.ctx], code[self.nxt]
        similar = cl == nl
        serendip = ~similar
        if level - delta >= 1:
            anc, _ = self.level(level - delta)
            serendip &= anc[self.ctx] == anc[self.nxt]
        return similar, serendip


def serendipitous_pairs(interactions: pa.Table, item_clusters: pa.Table, level: int = 3,
                        delta: int = 1, drop_unknown_items: bool = False) -> pa.Table:
    """The logged (context, next) pairs that are serendipitous at (``level``, ``delta``), with
    both items' level-``level`` cluster ids (context_cluster_id, next_cluster_id): different
    clusters at level l, the same cluster at level l - δ (paper §2).

    Raises:
        ConfigError: ``level`` not in 1..4 or ``delta`` not in 1..level.
        SchemaError: interactions naming items that are not in ``item_clusters`` (unless
            ``drop_unknown_items``).
    """
    CurationConfig(level=level, delta=delta).check()
    coded = _Coded(interactions, item_clusters, drop_unknown_items)
    _, serendip = coded.classify(level, delta)
    code, names = coded.level(level)
    rows = coded.rows[serendip]
    out = interactions.select(["user_id", "context_item_id", "next_item_id", "satisfaction"]
                              ).take(pa.array(rows))
    return (out.append_column("context_cluster_id", names.take(pa.array(code[coded.ctx[serendip]])))
               .append_column("next_cluster_id", names.take(pa.array(code[coded.nxt[serendip]]))))


def pair_stats(coded: _Coded, level: int, delta: int) -> dict:
    """Counts and mean satisfaction of similar, serendipitous and other pairs."""
    similar, serendip = coded.classify(level, delta)
    out = {}
    for kind, mask in (("similar", similar), ("serendipitous", serendip),
                       ("other", ~similar & ~serendip)):
        n = int(mask.sum())
        out[kind] = {"pairs": n,
                     "mean_satisfaction": round(float(coded.sat[mask].mean()), 4) if n else None}
    return out


def premise_grid(coded: _Coded, levels: int = 4) -> list[dict]:
    """The paper's motivating check (serendipitous next items satisfy more than similar ones)
    at every (level, delta) the tree allows, so the chosen pair can be seen in context: the
    premise is a property of the platform and of the tree, and may hold at some depths only."""
    rows = []
    for level in range(2, levels + 1):
        for delta in range(1, level):
            k = pair_stats(coded, level, delta)
            a, b = k["serendipitous"]["mean_satisfaction"], k["similar"]["mean_satisfaction"]
            rows.append({"level": level, "delta": delta,
                         "serendipitous_pairs": k["serendipitous"]["pairs"],
                         "similar_pairs": k["similar"]["pairs"],
                         "serendipitous_minus_similar": (None if a is None or b is None
                                                         else round(a - b, 4))})
    return rows


def select_diversified(coded: _Coded, cfg: CurationConfig) -> pa.Table:
    """Top-k context items per next-item cluster by mean satisfaction (ties: more pairs, then
    context item id), over the serendipitous pairs — vectorised (sort-based group-by)."""
    _, serendip = coded.classify(cfg.level, cfg.delta)
    code, names = coded.level(cfg.level)
    ctx = coded.ctx[serendip]
    target = code[coded.nxt[serendip]]
    n_clusters = max(len(names), 1)
    key = ctx * n_clusters + target
    uniq, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    mean = np.bincount(inv, weights=coded.sat[serendip], minlength=len(uniq)) / np.maximum(counts, 1)
    g_ctx, g_target = uniq // n_clusters, uniq % n_clusters
    keep = counts >= cfg.min_interactions
    g_ctx, g_target, mean, counts = g_ctx[keep], g_target[keep], mean[keep], counts[keep]
    ids = coded.item_clusters.column("item_id")
    id_rank = np.empty(len(ids), np.int64)
    id_rank[pc.sort_indices(ids).to_numpy()] = np.arange(len(ids))
    order = np.lexsort((id_rank[g_ctx], -counts, -mean, g_target))
    g_target_sorted = g_target[order]
    first = np.searchsorted(g_target_sorted, g_target_sorted, side="left")
    order = order[np.arange(len(order)) - first < cfg.top_k]
    # report clusters in id order
    name_rank = np.empty(len(names), np.int64)
    name_rank[pc.sort_indices(names).to_numpy()] = np.arange(len(names))
    order = order[np.argsort(name_rank[g_target[order]], kind="stable")]
    return pa.table({
        "context_item_id": ids.take(pa.array(g_ctx[order])),
        "target_cluster_id": names.take(pa.array(g_target[order])),
        "satisfaction": pa.array(mean[order], pa.float64()),
        "n_interactions": pa.array(counts[order], pa.int64()),
    })


def split_by_context(context_ids: list[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Deterministic train/test split by context item (hash of seed and id)."""
    uniq = sorted(set(context_ids))
    if not uniq:
        return {}
    u = np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{c}".encode(), digest_size=8)
                                 .digest(), "big") / 2**64 for c in uniq])
    test = u < test_fraction
    if test_fraction > 0 and len(uniq) >= 2:
        if not test.any():
            test[int(np.argmin(u))] = True
        if test.all():
            test[int(np.argmax(u))] = False
    return {c: ("test" if t else "train") for c, t in zip(uniq, test)}


def build_examples(selected: pa.Table, items: pa.Table, clusters: pa.Table,
                   item_clusters: pa.Table, prompt_cfg: PromptConfig, level: int) -> pa.Table:
    """Training examples (schema "examples") for one prompt strategy from a selection.

    The prompt shows the context item (title and its own level-``level`` cluster description
    for text strategies, frames or the thumbnail for visual ones); the target is the
    serendipitous cluster's description; for chain-of-thought the reasoning is the context
    item's own cluster description ("the video is about ...").
    """
    prompt_cfg.check()
    desc = dict(zip(clusters.column("cluster_id").to_pylist(),
                    clusters.column("description").to_pylist()))
    own = dict(zip(item_clusters.column("item_id").to_pylist(),
                   item_clusters.column(f"c{level}").to_pylist()))
    cols = ["item_id", "title"] + [c for c in ("thumbnail", "frames") if c in items.column_names]
    ids = items.column("item_id").to_pylist()
    index = {item_id: i for i, item_id in enumerate(ids)}
    titles = items.column("title").to_pylist()
    thumbs = items.column("thumbnail").to_pylist() if "thumbnail" in cols else [None] * len(ids)
    frames = items.column("frames").to_pylist() if "frames" in cols else [None] * len(ids)
    out: dict[str, list] = {name: [] for name in SCHEMAS["examples"].names}
    sel = selected.to_pydict()
    if prompt_cfg.uses_images:
        _check_media(prompt_cfg, sel["context_item_id"], index, thumbs, frames)
    for ctx, target, sat, split in zip(sel["context_item_id"], sel["target_cluster_id"],
                                       sel["satisfaction"], sel["split"]):
        i = index.get(ctx)
        if i is None:
            raise SchemaError("items", "item_id", f"context item {ctx!r} is not in items",
                              "curate with the items table the interactions refer to")
        context_desc = desc[own[ctx]]
        images = select_images(prompt_cfg, thumbs[i], frames[i])
        if any(not isinstance(m, str) for m in images):
            raise SchemaError("items", "thumbnail/frames", "examples need media references "
                              "(paths or URIs), got raw bytes",
                              "store media as files and put their paths in the items table")
        out["context_item_id"].append(ctx)
        out["target_cluster_id"].append(target)
        out["target_description"].append(desc[target])
        out["satisfaction"].append(float(sat))
        out["strategy"].append(prompt_cfg.strategy)
        out["prompt"].append(build_prompt(prompt_cfg, titles[i] or "", context_desc))
        out["images"].append(images)
        out["reasoning"].append(context_desc if prompt_cfg.strategy == "cot" else None)
        out["split"].append(split)
    return pa.table(out, schema=SCHEMAS["examples"])


def _check_targets_are_candidates(selected: pa.Table, clusters: pa.Table,
                                  item_clusters: pa.Table, cfg: CurationConfig) -> None:
    """Every training target must be one of its context's candidate clusters
    (:mod:`serendip.candidates`); building the index also refuses item_clusters whose path
    contradicts the clusters table, which would make pairs "serendipitous" that are not."""
    from serendip.candidates import CandidateIndex

    index = CandidateIndex.build(item_clusters, clusters, cfg.level, cfg.delta)
    ok = index.is_candidate(selected.column("context_item_id").to_pylist(),
                            selected.column("target_cluster_id").to_pylist())
    if not ok.all():   # pragma: no cover - guarded by the index's consistency check
        bad = int(np.argmin(ok))
        raise SchemaError("clusters", "parent_id",
                          f"target {selected.column('target_cluster_id')[bad].as_py()!r} is not "
                          "a candidate of its context item", "rebuild the tree with "
                          "`serendip cluster` and curate again")


def _check_media(prompt_cfg: PromptConfig, context_ids: list[str], index: dict[str, int],
                 thumbs: list, frames: list) -> None:
    """Refuse, before any example is built, context items without the media the prompt needs."""
    need, has = (("thumbnail", _has_thumbnail) if prompt_cfg.use_thumbnail
                 else ("frames", _has_frames))
    media = thumbs if prompt_cfg.use_thumbnail else frames
    ids = sorted({c for c in context_ids if c in index})
    lacking = [c for c in ids if not has(media[index[c]])]
    if lacking:
        other = "" if prompt_cfg.use_thumbnail or not all(
            _has_thumbnail(thumbs[index[c]]) for c in lacking) else ", use the thumbnail " \
            "(--thumbnail)"
        raise SchemaError("items", need, f"{len(lacking)} of {len(ids)} context items have no "
                          f"{need} (e.g. {lacking[0]!r}), which the {prompt_cfg.strategy!r} "
                          "prompt needs", f"add {need} to these items{other}, or use the text "
                          "prompt: --strategy text (finetune: --set prompt.strategy=text)")


def curate(items: pa.Table, interactions: pa.Table, clusters: pa.Table,
           item_clusters: pa.Table, cfg: CurationConfig | None = None) -> CurationResult:
    """Serendipitous pairs → diversified top-k selection → held-out split → examples (paper §2,
    "Serendipitous User Experience" and "MLLM Fine-Tuning": keep a logged (context, next) pair
    only when the two items differ at level l but share the cluster at level l - δ).

    Args:
        items: item_id, title, media columns. interactions: user_id, context_item_id,
            next_item_id, satisfaction in [0, 1]. clusters / item_clusters: the cluster tree.

    Returns:
        CurationResult: ``examples`` (one row per selected pair, split train/test by context
        item), ``selected`` pairs and ``stats``.

    Raises:
        ConfigError: a setting out of range (``level``, ``delta``, ``top_k``, ...), no
            interactions, or no serendipitous pair at (level, δ) (the fix names a smaller δ).
        SchemaError: interactions naming items that are not in the tree (unless
            ``cfg.drop_unknown_items``).
    """
    cfg = cfg or CurationConfig()
    cfg.check()
    if interactions.num_rows == 0:
        raise ConfigError("no interactions to curate from", field="interactions",
                          fix="pass a non-empty interactions table")
    coded = _Coded(interactions, item_clusters, cfg.drop_unknown_items)
    dropped = coded.n_missing
    kinds = pair_stats(coded, cfg.level, cfg.delta)
    if kinds["serendipitous"]["pairs"] == 0:
        raise ConfigError(f"no serendipitous pairs at level={cfg.level}, delta={cfg.delta} "
                          f"({kinds['similar']['pairs']} similar, {kinds['other']['pairs']} other)",
                          field="level/delta",
                          fix="use a larger --delta (a broader shared ancestor) or another "
                              "--level; check that the tree has several clusters per parent")
    agg = select_diversified(coded, cfg)
    _check_targets_are_candidates(agg, clusters, item_clusters, cfg)
    if agg.num_rows == 0:
        raise ConfigError(f"no (context item, cluster) pair has >= {cfg.min_interactions} "
                          "serendipitous interactions", field="min_interactions",
                          fix="lower min_interactions")
    split = split_by_context(agg.column("context_item_id").to_pylist(), cfg.test_fraction,
                             cfg.seed)
    selected = agg.append_column("split", pa.array(
        [split[c] for c in agg.column("context_item_id").to_pylist()], pa.string()))
    selected = selected.cast(SELECTED_SCHEMA)
    prompt, media = choose_prompt(cfg, items, selected.column("context_item_id").to_pylist())
    examples = build_examples(selected, items, clusters, item_clusters, prompt, cfg.level)
    level_rows = clusters.filter(pc.equal(clusters.column("level"), cfg.level))
    cand_ids = level_rows.column("cluster_id").to_pylist()
    per_cluster = pc.value_counts(selected.column("target_cluster_id")).field("counts")
    n_split = {s: int(pc.sum(pc.equal(selected.column("split"), s)).as_py() or 0)
               for s in ("train", "test")}
    stats = {
        "interactions": interactions.num_rows,
        "dropped_unknown_interactions": dropped,
        "pairs": kinds,
        "serendipitous_minus_similar_satisfaction": (
            None if kinds["similar"]["mean_satisfaction"] is None else
            round(kinds["serendipitous"]["mean_satisfaction"]
                  - kinds["similar"]["mean_satisfaction"], 4)),
        "premise_by_level_delta": premise_grid(coded),
        "selected_pairs": selected.num_rows,
        "context_items": len(split),
        "clusters_at_level": len(cand_ids),
        "clusters_with_examples": len(per_cluster),
        "examples_per_cluster_min": int(pc.min(per_cluster).as_py()),
        "examples_per_cluster_max": int(pc.max(per_cluster).as_py()),
        "selected_mean_satisfaction": round(float(pc.mean(selected.column("satisfaction"))
                                                  .as_py()), 4),
        "train_examples": n_split["train"],
        "test_examples": n_split["test"],
        "prompt": media,
    }
    return CurationResult(selected=selected, examples=examples, stats=stats,
                          candidate_cluster_ids=cand_ids,
                          candidates=level_rows.column("description").to_pylist(), prompt=prompt)


def _has_frames(frames) -> bool:
    return frames is not None and any(f is not None and (not isinstance(f, str) or f.strip())
                                      for f in frames)


def _has_thumbnail(thumbnail) -> bool:
    return thumbnail is not None and (not isinstance(thumbnail, str) or bool(thumbnail.strip()))


def media_counts(items: pa.Table, item_ids: list[str]) -> dict:
    """How many of ``item_ids`` (distinct) have frames and how many a thumbnail."""
    ids = sorted(set(item_ids))
    cols = items.column_names
    sub = items.filter(pc.is_in(items.column("item_id"), value_set=pa.array(ids, pa.string())))
    frames = sub.column("frames").to_pylist() if "frames" in cols else [None] * sub.num_rows
    thumbs = sub.column("thumbnail").to_pylist() if "thumbnail" in cols else [None] * sub.num_rows
    return {"context_items": len(ids), "with_frames": sum(map(_has_frames, frames)),
            "with_thumbnail": sum(map(_has_thumbnail, thumbs))}


def choose_prompt(cfg: CurationConfig, items: pa.Table, context_ids: list[str]
                  ) -> tuple[PromptConfig, dict]:
    """The prompt the examples are built with, and a record of the choice (for the stats).

    With ``cfg.prompt`` None, the richest prompt every context item supports is chosen: chain
    of thought on 4 frames → on the thumbnail → the text prompt. Otherwise ``cfg.prompt`` is
    kept (:func:`build_examples` refuses items without the media it needs).
    """
    counts = media_counts(items, context_ids)
    n = counts["context_items"]
    prompt, why = cfg.prompt, "set explicitly"
    if prompt is None:
        prompt = PromptConfig()
        if counts["with_frames"] == n:
            why = "default: every context item has frames"
        elif counts["with_thumbnail"] == n:
            prompt = replace(prompt, use_thumbnail=True)
            why = (f"default adapted: {n - counts['with_frames']} of {n} context items have no "
                   "frames but all have a thumbnail")
        else:
            prompt = PromptConfig(strategy="text")
            lacking = n - max(counts["with_frames"], counts["with_thumbnail"])
            why = (f"default adapted: {lacking} of {n} context items have neither frames nor a "
                   "thumbnail, so the text prompt (title + cluster description) is used; "
                   "choose another with --strategy")
    return prompt, {"strategy": prompt.strategy, "n_frames": prompt.n_frames,
                    "use_thumbnail": prompt.use_thumbnail, "chosen": why, **counts}


# ------------------------------------------------------------------ curation.json (one manifest)
CURATION_FILE = "curation.json"
_MANIFEST_KEYS = ("level", "delta", "top_k")      # top level, and again inside ``config``


@dataclass(frozen=True)
class CurationManifest:
    """What a curation run records in ``curation.json``: the settings it ran with (l, δ, top-k,
    the held-out split's fraction and seed, and the prompt the examples were actually built
    with), its statistics and the level-``l`` candidates (paper §2, §4.1).

    The one reader (:func:`read_curation`) and writer (:func:`write_curation`) of the file: every
    later stage (fine-tuning, evaluation, scoring, serving, the demo) takes l, δ, the split and
    the prompt from here, so one work directory never means two δs.

    Raises:
        ConfigError: ``config`` has no prompt (the manifest records the prompt actually used).
    """

    config: CurationConfig
    stats: dict = field(default_factory=dict)
    candidate_cluster_ids: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()         # descriptions of the level-l clusters

    def __post_init__(self) -> None:
        if self.config.prompt is None:
            raise ConfigError("a curation manifest without the prompt the examples were built "
                              "with", field="prompt", fix="pass CurationConfig(prompt=...)")
        self.config.check()

    @classmethod
    def from_result(cls, result: CurationResult, cfg: CurationConfig) -> CurationManifest:
        """The manifest of a :func:`curate` run: ``cfg`` with the prompt actually used (it may
        have adapted to the media, :func:`choose_prompt`)."""
        return cls(replace(cfg, prompt=result.prompt or cfg.prompt),
                   result.stats, tuple(result.candidate_cluster_ids), tuple(result.candidates))

    @property
    def level(self) -> int:
        """l: the tree level at which context and next item differ; 1..4."""
        return self.config.level

    @property
    def delta(self) -> int:
        """δ: context and next item share the cluster at level l - δ; 1..level."""
        return self.config.delta

    @property
    def top_k(self) -> int:
        return self.config.top_k

    @property
    def test_fraction(self) -> float:
        """Held-out share of context items, in [0, 1) (the split of the examples)."""
        return self.config.test_fraction

    @property
    def seed(self) -> int:
        """Seed of the held-out split."""
        return self.config.seed

    @property
    def prompt(self) -> PromptConfig:
        """The prompt the examples were built with (the manifest that travels to the model)."""
        return self.config.prompt

    def to_json(self) -> dict:
        """The ``curation.json`` document: level, δ, top-k, the ``prompt`` manifest
        (:func:`serendip.prompts.prompt_manifest`), the full config, the statistics and the
        candidates."""
        from serendip.config import to_dict

        return {"level": self.level, "delta": self.delta, "top_k": self.top_k,
                "prompt": prompt_manifest(self.prompt), "config": to_dict(self.config),
                "stats": self.stats, "candidate_cluster_ids": list(self.candidate_cluster_ids),
                "candidates": list(self.candidates)}


def write_curation(directory: str | os.PathLike, manifest: CurationManifest) -> Path:
    """Write ``manifest`` to ``<directory>/curation.json`` (atomically); returns the path."""
    import json

    from serendip.data.io import atomic_write_bytes

    path = Path(directory) / CURATION_FILE
    atomic_write_bytes(path, json.dumps(manifest.to_json(), indent=2).encode())
    return path


def read_curation(directory: str | os.PathLike, *, missing_ok: bool = False
                  ) -> CurationManifest | None:
    """The :class:`CurationManifest` of ``<directory>/curation.json``, exactly as curation wrote
    it: every setting is read from the file (never a default), through the one config loader
    (:func:`serendip.config.load_config`), so it is range-checked as on the command line.

    Args:
        directory: the work directory (or the KFP examples artifact) holding curation.json.
        missing_ok: return None when there is no curation.json (a caller that deliberately
            works on a bare cluster tree then applies its own explicit fallback); a file that
            is there is always read strictly.

    Raises:
        SerendipError: no curation.json (and not ``missing_ok``): run ``serendip curate``.
        ConfigError: the file is not a JSON object, lacks ``prompt``, ``level``, ``delta``,
            ``top_k`` or ``config``, has a value of the wrong type or out of range, or its
            top-level and ``config`` values disagree (the field is named; fix: re-curate).
    """
    import json

    from serendip.config import load_config
    from serendip.errors import SerendipError
    from serendip.prompts import read_prompt_manifest

    path = Path(directory) / CURATION_FILE
    fix = f"re-run `serendip curate --data {directory}`"
    if not path.is_file():
        if missing_ok:
            return None
        raise SerendipError(f"{path} is missing", field=CURATION_FILE,
                            fix=f"run `serendip curate --data {directory}` first")
    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} is not a JSON object", field=CURATION_FILE, fix=fix)
    prompt = read_prompt_manifest(doc, str(path), fix)
    for key in _MANIFEST_KEYS:
        if key not in doc:
            raise ConfigError(f"{path} has no {key}", field=key, fix=fix)
    conf = doc.get("config")
    if not isinstance(conf, dict):
        raise ConfigError(f"{path} has no config object", field="config", fix=fix)
    for key in _MANIFEST_KEYS:
        if key in conf and conf[key] != doc[key]:
            raise ConfigError(f"{path}: {key}={doc[key]!r} but config.{key}={conf[key]!r}",
                              field=key, fix=fix)
    for key in ("test_fraction", "seed"):       # the held-out split: never a default
        if key not in conf:
            raise ConfigError(f"{path} has no config.{key}", field=f"config.{key}", fix=fix)
    settings = {**conf, **{k: doc[k] for k in _MANIFEST_KEYS}}
    settings.pop("prompt", None)
    try:
        cfg = load_config(CurationConfig, settings=settings)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e.message}", field=e.field, fix=fix) from None
    stats = doc.get("stats", {})
    ids, cands = doc.get("candidate_cluster_ids", []), doc.get("candidates", [])
    if not isinstance(stats, dict) or not isinstance(ids, list) or not isinstance(cands, list):
        raise ConfigError(f"{path}: stats must be an object, candidate_cluster_ids and "
                          "candidates lists", field=CURATION_FILE, fix=fix)
    return CurationManifest(replace(cfg, prompt=prompt), stats, tuple(ids), tuple(cands))


# ------------------------------------------------------------------ stage entry (CLI, KFP)
def curate_stage(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 cfg: CurationConfig | None = None, *,
                 clusters_dir: str | os.PathLike | None = None) -> CurationResult:
    """Read items + interactions from ``data_dir`` and clusters + item_clusters from
    ``clusters_dir`` (default: ``data_dir`` if it has them, else ``out_dir``); write
    examples.parquet, curated_pairs.parquet and curation.json to ``out_dir`` (default:
    ``data_dir``): :func:`curate` on a work directory (paper §2).

    Raises:
        SchemaError: a missing or malformed table. ConfigError: as :func:`curate`.
    """
    from serendip.data.io import atomic_write_parquet, has_table, read_table, write_table

    cfg = cfg or CurationConfig()
    out = Path(out_dir or data_dir)
    out.mkdir(parents=True, exist_ok=True)
    if clusters_dir is None:   # `cluster --data raw --out work` then `curate --data raw --out work`
        clusters_dir = data_dir if has_table(data_dir, "clusters") else out
    cdir = clusters_dir
    items = read_table(data_dir, "items")
    interactions = read_table(data_dir, "interactions", refs={"items": items})
    clusters = read_table(cdir, "clusters")
    item_clusters = read_table(cdir, "item_clusters", refs={"items": items, "clusters": clusters})
    result = curate(items, interactions, clusters, item_clusters, cfg)
    write_table(out, "examples", result.examples, refs={"items": items, "clusters": clusters})
    atomic_write_parquet(result.selected, out / "curated_pairs.parquet")
    write_curation(out, CurationManifest.from_result(result, cfg))
    return result
