"""Examples → model inputs, and the example tables' helpers (split, target level, targets).

A prompt from :mod:`serendip.prompts` carries no image tokens; :func:`format_prompt` inserts
the processor's image placeholder once per image, and the processor expands it to the vision
tokens. The target is tokenized in pieces — reasoning, ``" Answer:"``, ``" " + description``,
EOS — so that the answer's ids are exactly the sequence the trie holds (no BPE merge across the
marker), whatever the tokenizer. Labels mask the prompt (and padding) with -100.

Images are decoded and preprocessed once per media reference and cached; token-level tensors
are left-padded, image-level tensors are concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import torch

from serendip.data.media import load_image
from serendip.errors import ConfigError, SerendipError
from serendip.mllm.config import FinetuneConfig
from serendip.mllm.loading import format_prompt, tokenizer_of
from serendip.mllm.trie import answer_ids
from serendip.prompts import ANSWER_MARKER, PromptConfig, build_target

# Processor outputs aligned with the token sequence (padded); everything else is per image.
TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")
IGNORE = -100


@dataclass
class Encoded:
    """One example: prompt ids (image tokens expanded), image tensors, and target ids."""

    prompt_ids: list[int]
    extra_token: dict[str, list[int]] = field(default_factory=dict)   # e.g. mm_token_type_ids
    vision: dict[str, torch.Tensor] = field(default_factory=dict)     # e.g. pixel_values
    target_ids: list[int] = field(default_factory=list)


def marker_ids(tokenizer) -> list[int]:
    return answer_ids(tokenizer, ANSWER_MARKER)


def target_ids(tokenizer, target: str) -> list[int]:
    """Ids of a target text ``[reasoning] Answer: description`` + EOS, piece by piece."""
    if ANSWER_MARKER not in target:
        raise SerendipError(f"target {target[:60]!r} has no answer marker", field="target",
                            fix=f"build targets with serendip.prompts.build_target "
                                f"(they end with '{ANSWER_MARKER} <description>')")
    head, desc = target.rsplit(ANSWER_MARKER, 1)
    ids: list[int] = []
    if head.strip():
        ids += list(tokenizer(head.strip(), add_special_tokens=False)["input_ids"])
    ids += marker_ids(tokenizer) + answer_ids(tokenizer, desc.strip())
    return ids + [tokenizer.eos_token_id]


class Encoder:
    """Turns (prompt, images, target) into :class:`Encoded`, caching preprocessed images."""

    def __init__(self, processor, image_size: int | None = None, base_dir=None):
        self.processor = processor
        self.tokenizer = tokenizer_of(processor)
        self.image_size = image_size
        self.base_dir = base_dir
        self._images: dict = {}

    def _image(self, ref):
        if not isinstance(ref, (str, bytes)):
            return ref if getattr(ref, "mode", "RGB") == "RGB" else ref.convert("RGB")
        key = ref if isinstance(ref, str) else hash(ref)
        img = self._images.get(key)
        if img is None:
            img = load_image(ref, self.image_size, self.base_dir)
            if len(self._images) < 50_000:
                self._images[key] = img
        return img

    def encode(self, prompt: str, images: Sequence, target: str | None = None) -> Encoded:
        imgs = [self._image(r) for r in images]
        text = format_prompt(self.processor, prompt, len(imgs))
        kwargs = {"images": imgs} if imgs else {}
        out = self.processor(text=[text], return_tensors="pt", **kwargs)
        enc = Encoded(prompt_ids=out["input_ids"][0].tolist())
        for key, value in out.items():
            if key in ("input_ids", "attention_mask"):
                continue
            if key in TOKEN_KEYS:
                enc.extra_token[key] = value[0].tolist()
            elif isinstance(value, torch.Tensor):
                enc.vision[key] = value
        if target is not None:
            enc.target_ids = target_ids(self.tokenizer, target)
        return enc


    def encode_batch(self, prompts: Sequence[str], images: Sequence[Sequence]) -> list[Encoded]:
        """:meth:`encode` for many prompts with one processor call (the per-call overhead of
        a processor is larger than the tiny model's forward pass). Same output as one call
        per prompt; falls back to that when the processor's image tensors are not one row per
        image (e.g. Qwen2-VL's concatenated patches)."""
        imgs = [[self._image(r) for r in row] for row in images]
        counts = [len(row) for row in imgs]
        if len(prompts) < 2 or len(set(counts)) != 1:
            return [self.encode(p, im) for p, im in zip(prompts, imgs)]
        texts = [format_prompt(self.processor, p, n) for p, n in zip(prompts, counts)]
        kwargs = {"images": [im for row in imgs for im in row]} if counts[0] else {}
        try:
            out = self.processor(text=texts, return_tensors="pt", padding=True, **kwargs)
        except ValueError:                      # e.g. a tokenizer without a pad token
            return [self.encode(p, im) for p, im in zip(prompts, imgs)]
        vision = {k: v for k, v in out.items()
                  if k not in TOKEN_KEYS and isinstance(v, torch.Tensor)}
        if any(v.shape[0] != sum(counts) for v in vision.values()):
            return [self.encode(p, im) for p, im in zip(prompts, imgs)]
        keep = out["attention_mask"].bool()
        encoded = []
        for i in range(len(prompts)):
            enc = Encoded(prompt_ids=out["input_ids"][i][keep[i]].tolist())
            for key in TOKEN_KEYS:
                if key in out and key not in ("input_ids", "attention_mask"):
                    enc.extra_token[key] = out[key][i][keep[i]].tolist()
            n = counts[0]
            enc.vision = {k: v[i * n:(i + 1) * n] for k, v in vision.items()}
            encoded.append(enc)
        return encoded


def _cat_vision(batch: Sequence[Encoded]) -> dict[str, torch.Tensor]:
    keys = batch[0].vision.keys()
    return {k: torch.cat([e.vision[k] for e in batch], dim=0) for k in keys}


def collate_train(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompt+target with labels on the target only.

    Left padding puts every target at the end of its row, so the loss needs logits for the
    last ``max target length + 1`` positions only (see ``train._loss``): the output layer
    then runs on a fraction of the tokens. Rotary positions are relative, so padding side does
    not change what the model computes for the real tokens.
    """
    seqs = [e.prompt_ids + e.target_ids for e in batch]
    n = max(len(s) for s in seqs)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    extra = {k: torch.zeros((len(batch), n), dtype=torch.long) for k in batch[0].extra_token}
    for i, (e, s) in enumerate(zip(batch, seqs)):
        start = n - len(s)
        ids[i, start:] = torch.tensor(s)
        mask[i, start:] = 1
        labels[i, n - len(e.target_ids):] = torch.tensor(e.target_ids)
        for k, v in e.extra_token.items():
            extra[k][i, start:start + len(v)] = torch.tensor(v)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, **extra,
            **_cat_vision(batch)}


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int,
             extra: dict[str, Sequence[Sequence[int]]] | None = None) -> dict[str, torch.Tensor]:
    """Left-padded ids + attention mask (+ token-aligned extras padded with 0) for generation."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    out_extra = {k: torch.zeros((len(seqs), n), dtype=torch.long) for k in (extra or {})}
    for i, s in enumerate(seqs):
        if s:
            ids[i, n - len(s):] = torch.tensor(list(s))
            mask[i, n - len(s):] = 1
        for k, vals in (extra or {}).items():
            v = list(vals[i])
            if v:
                out_extra[k][i, n - len(v):] = torch.tensor(v)
    return {"input_ids": ids, "attention_mask": mask, **out_extra}


def collate_generate(batch: Sequence[Encoded], pad_id: int,
                     suffixes: Sequence[Sequence[int]] | None = None) -> dict[str, torch.Tensor]:
    """Left-padded prompts (optionally followed by ``suffixes``, e.g. reasoning + marker)."""
    suffixes = suffixes or [[] for _ in batch]
    seqs = [e.prompt_ids + list(s) for e, s in zip(batch, suffixes)]
    extra = {k: [e.extra_token[k] + [0] * len(s) for e, s in zip(batch, suffixes)]
             for k in batch[0].extra_token}
    return {**left_pad(seqs, pad_id, extra), **_cat_vision(batch)}


# ---------------------------------------------------------------------------- example tables
def level_clusters(clusters: pa.Table, level: int) -> tuple[list[str], list[str]]:
    """(cluster ids, descriptions) of the tree's clusters at ``level``, sorted by id: the
    answers a model fine-tuned at that level may give."""
    lv = clusters.filter(pc.equal(clusters.column("level"), level))
    lv = lv.sort_by("cluster_id")
    return lv.column("cluster_id").to_pylist(), lv.column("description").to_pylist()


def target_level(examples: pa.Table, clusters: pa.Table) -> int:
    """The one tree level of the examples' target clusters.

    Raises:
        SerendipError: a target cluster missing from ``clusters``, or targets at several
            levels (field ``target_cluster_id``)."""
    level_of = dict(zip(clusters.column("cluster_id").to_pylist(),
                        clusters.column("level").to_pylist()))
    levels = {level_of.get(c) for c in set(examples.column("target_cluster_id").to_pylist())}
    if None in levels:
        raise SerendipError("examples target clusters missing from the clusters table",
                            field="target_cluster_id", fix="curate against these clusters")
    if len(levels) != 1:
        raise SerendipError(f"targets span levels {sorted(levels)}", field="target_cluster_id",
                            fix="curate examples at one tree level")
    return int(levels.pop())


def example_targets(examples: pa.Table, prompt: PromptConfig) -> list[str]:
    """The target text of each example (reasoning, answer marker, description) as
    :func:`serendip.prompts.build_target` builds it for ``prompt``."""
    descs = examples.column("target_description").to_pylist()
    reasons = (examples.column("reasoning").to_pylist() if "reasoning" in examples.column_names
               else [None] * len(descs))
    return [build_target(prompt, d, r) for d, r in zip(descs, reasons)]


def split(examples: pa.Table, name: str) -> pa.Table:
    """The examples whose ``split`` column is ``name`` (``train`` or ``test``)."""
    return examples.filter(pc.equal(examples.column("split"), name))


def check_examples(examples: pa.Table, clusters: pa.Table, cfg: FinetuneConfig,
                   prompt_config: PromptConfig | None):
    """(prompt, level, cluster ids, descriptions, train, test) of valid fine-tuning inputs;
    :func:`serendip.mllm.train.finetune` writes nothing before these checks pass.

    Raises:
        ConfigError: no prompt config, or one (or a strategy) that disagrees with the examples.
        SerendipError: no ``train`` split, or targets not at one level of ``clusters``."""
    prompt = prompt_config or cfg.prompt
    if prompt is None:               # never guessed from the examples (issue 13)
        raise ConfigError("the prompt config the examples were built with is not given",
                          field="prompt", fix="pass prompt_config (CurationResult.prompt, or "
                                              "the prompt object of curation.json)")
    prompt.check()
    if cfg.prompt is not None and cfg.prompt != prompt:
        raise ConfigError(f"examples were built with {prompt}, the config asks for {cfg.prompt}",
                          field="prompt", fix="rebuild the examples with build_examples, or "
                                              "drop prompt from the fine-tune config")
    strategies = set(examples.column("strategy").to_pylist())
    if strategies != {prompt.strategy}:
        raise ConfigError(f"examples have strategy {sorted(strategies)}, prompt config "
                          f"{prompt.strategy!r}", field="strategy",
                          fix="rebuild the examples for this strategy")
    level = target_level(examples, clusters)
    cluster_ids, descriptions = level_clusters(clusters, level)
    train, test = split(examples, "train"), split(examples, "test")
    if train.num_rows == 0:
        raise SerendipError("no training examples (split == 'train')", field="examples",
                            fix="curate with a test_fraction below 1")
    return prompt, level, cluster_ids, descriptions, train, test
