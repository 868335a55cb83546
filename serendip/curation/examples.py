"""Training examples for one prompt strategy from a selection, and the choice of the prompt
from the media the context items have (paper §4.1: the serendipitous cluster's description is
the target; chain of thought reasons through the context item's own cluster)."""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc

from serendip.curation.config import CurationConfig
from serendip.data.schemas import SCHEMAS
from serendip.errors import SchemaError
from serendip.prompts import PromptConfig, build_prompt, select_images


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

