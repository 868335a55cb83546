"""``ClusterPredictor``: context item → serendipitous clusters, with controlled generation.

Decoding, per batch (left padding, ``torch.inference_mode``):

* direct prompts (text / video / multimodal), constrained: the answer marker is appended to
  the prompt and the description is decoded under the trie (greedy for k=1, beam search with
  ``k`` beams otherwise); every answer is a candidate description → its cluster id;
* chain of thought, constrained: a free reasoning phase first (greedy, the marker forced in
  time), then the same trie-constrained answer phase after the marker;
* unconstrained: free generation of the whole target; the answer is the text after the marker
  and may match no description (``cluster_id`` is then ``None``) — this is what match rate
  measures.
* by likelihood (:mod:`.likelihood`, ``decoding="likelihood"``, and by default for k > 1 or
  when the candidates of each input are given): the prompt is encoded once and every candidate
  description is scored as its continuation, reusing the prompt's KV cache — the exact top-k
  (beam search only approximates it) at a fraction of its cost for a handful of candidates.
  Chain of thought still generates its reasoning first; match rate still needs free generation.

Scores are sequence probabilities of the answer tokens (the product of the model's
next-token probabilities, unrenormalised under the constraint), comparable across clusters.

A saved model directory holds ``serendip.json`` (level, the ``prompt`` manifest, candidates,
decoding settings), ``processor/`` and either ``model/`` (all weights) or ``adapter/``
(+ ``base/`` when the base is small enough to bundle), all safetensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from serendip.data.io import atomic_write_bytes
from serendip.errors import ConfigError, SerendipError
from serendip.mllm.data import Encoded, Encoder, collate_generate, left_pad, marker_ids
from serendip.mllm.distributed import pick_device, to_device
from serendip.mllm.loading import load_base, load_processor, quiet_transformers, tokenizer_of
from serendip.mllm.trie import ReasoningProcessor, TrieLogitsProcessor, candidate_trie
from serendip.prompts import (
    PromptConfig,
    build_prompt,
    parse_answer,
    prompt_manifest,
    read_prompt_manifest,
    select_images,
)
from serendip.transitions import TransitionPrior

FORMAT_VERSION = 1
META = "serendip.json"
DECODINGS = ("auto", "beam", "likelihood")


@dataclass
class Prediction:
    cluster_id: str | None       # None only for an unconstrained answer that matches no cluster
    description: str
    score: float
    reasoning: str | None = None  # chain of thought: the model's description of the video


class ClusterPredictor:
    """A fine-tuned VLM + its candidate clusters; ``predict`` returns top-k clusters per input
    by controlled generation (paper §2: a trie allows only cluster descriptions).

    Raises:
        ConfigError: from :meth:`load`, a directory that is not a saved model; from
            :meth:`predict`, ``k`` < 1. SerendipError: an input that is not a mapping, or
            images that cannot be read.
    """

    def __init__(self, model, processor, cluster_ids: Sequence[str], descriptions: Sequence[str],
                 prompt_config: PromptConfig, level: int, model_version: str = "",
                 image_size: int | None = None, reasoning_tokens: int = 32,
                 batch_size: int = 32, base_dir: str | None = None, decoding: str = "auto",
                 prior: TransitionPrior | None = None, prior_weight: float = 0.0):
        if decoding not in DECODINGS:
            raise ConfigError(f"unknown decoding {decoding!r}", field="decoding",
                              fix=f"use one of {', '.join(DECODINGS)}")
        if len(cluster_ids) != len(descriptions) or not cluster_ids:
            raise ConfigError("candidates need one description per cluster id",
                              field="candidates", fix="pass the level-l clusters table")
        if len(set(descriptions)) != len(descriptions):
            raise ConfigError("candidate descriptions are not unique", field="description",
                              fix="make cluster descriptions unique (clusters contract)")
        prompt_config.check()
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = tokenizer_of(processor)
        self.cluster_ids = list(cluster_ids)
        self.descriptions = list(descriptions)
        self._by_description = {d: c for c, d in zip(self.cluster_ids, self.descriptions)}
        self.prompt_config = prompt_config
        self.level = int(level)
        self.model_version = model_version
        self.image_size = image_size
        self.reasoning_tokens = reasoning_tokens
        self.batch_size = batch_size
        self.decoding = decoding
        self.encoder = Encoder(processor, image_size, base_dir)
        self.trie, self._candidate_ids = candidate_trie(self.tokenizer, self.descriptions)
        self.marker = marker_ids(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id
        self.eos_id = self.tokenizer.eos_token_id
        if prior_weight < 0:
            raise ConfigError(f"prior_weight={prior_weight}", field="prior_weight",
                              fix="use >= 0 (0: the model alone)")
        self.prior = prior                 # logit adjustment (serendip.transitions)
        self.prior_weight = float(prior_weight)

    # ------------------------------------------------------------------ public API
    def predict(self, inputs: Sequence[dict], k: int = 1, constrained: bool = True,
                candidates: Sequence[Sequence[str]] | None = None) -> list[list[Prediction]]:
        """Top-``k`` clusters per input ``dict(title, context_description, images)``.

        ``candidates`` (optional, constrained only): per input, the cluster ids it may be
        answered with (e.g. its serendipitous siblings); they are ranked by likelihood.

        ``images`` are media references or PIL images: the thumbnail (its first) or the
        frames, which are sampled to the model's frame count exactly as curation sampled the
        training examples (:func:`serendip.prompts.select_images`). Instead of ``images`` an
        input may give the item's ``thumbnail`` and ``frames``.

        With a transition prior (a model fine-tuned on a curation that wrote one, weight
        ``prior_weight`` > 0) every constrained answer is ranked by log-likelihood +
        ``prior_weight`` · log π(cluster | the context's own cluster) (logit adjustment,
        :mod:`serendip.transitions`); the own cluster is the input's ``context_cluster_id``,
        else the level-l cluster whose description is its ``context_description``. The
        returned ``score`` stays the model's own likelihood.
        """
        prompts, images, owns = [], [], []
        for i, x in enumerate(inputs):
            try:
                prompts.append(build_prompt(self.prompt_config, str(x.get("title") or ""),
                                            str(x.get("context_description") or "")))
            except AttributeError:
                raise SerendipError(f"input {i} is not a mapping", field="inputs",
                                    fix="pass dict(title=, context_description=, images=)") \
                    from None
            images.append(self._images_for(x, i))
            owns.append(x.get("context_cluster_id")
                        or self._by_description.get(str(x.get("context_description") or "")))
        return self.predict_prompts(prompts, images, k=k, constrained=constrained,
                                    candidates=candidates, context_clusters=owns)

    def predict_prompts(self, prompts: Sequence[str], images: Sequence[Sequence],
                        k: int = 1, constrained: bool = True,
                        candidates: Sequence[Sequence[str]] | None = None,
                        context_clusters: Sequence[str | None] | None = None
                        ) -> list[list[Prediction]]:
        """Like :meth:`predict` for already-built prompts (e.g. the examples table);
        ``context_clusters``: each context's own level-l cluster, for the transition prior
        (None: no prior for that input).

        Raises:
            ConfigError: k < 1, or ``candidates`` with ``constrained=False``.
            SerendipError: prompts, images and candidates differ in length, or a candidate
                is not a cluster of this model.
        """
        if k < 1:
            raise ConfigError(f"k={k}", field="k", fix="ask for k >= 1 clusters")
        if len(prompts) != len(images):
            raise SerendipError("prompts and images differ in length", field="images",
                                fix="give one image list per prompt")
        pairs = self._candidate_indices(candidates, len(prompts), constrained)
        owns = list(context_clusters) if context_clusters is not None else [None] * len(prompts)
        if len(owns) != len(prompts):
            raise SerendipError(f"{len(owns)} context clusters for {len(prompts)} prompts",
                                field="context_clusters", fix="give one (or None) per prompt")
        # Batches of similar length (by prompt text) waste little compute on left padding.
        order = sorted(range(len(prompts)), key=lambda i: (len(images[i]), len(prompts[i])))
        out: list[list[Prediction] | None] = [None] * len(prompts)
        with torch.inference_mode(), _autocast(self.model.device):
            for s in range(0, len(order), self.batch_size):
                rows = order[s:s + self.batch_size]
                batch = self.encoder.encode_batch([prompts[i] for i in rows],
                                                  [images[i] for i in rows])
                row_pairs = [pairs[i] for i in rows] if pairs is not None else None
                for i, preds in zip(rows, self._predict_batch(batch, k, constrained,
                                                              row_pairs,
                                                              [owns[i] for i in rows])):
                    out[i] = preds
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ decoding
    def _candidate_indices(self, candidates, n: int, constrained: bool
                           ) -> list[list[int]] | None:
        if candidates is None:
            return None
        if not constrained:
            raise ConfigError("candidates restrict the constrained answer only",
                              field="candidates", fix="pass constrained=True, or no candidates")
        if len(candidates) != n:
            raise SerendipError(f"{len(candidates)} candidate lists for {n} inputs",
                                field="candidates", fix="give one list of cluster ids per input")
        index = {c: j for j, c in enumerate(self.cluster_ids)}
        out = []
        for row in candidates:
            if isinstance(row, (str, bytes)) or not row:
                raise SerendipError("each input needs a non-empty list of cluster ids",
                                    field="candidates", fix="e.g. [['3.1.0', '3.1.2'], ...]")
            unknown = [c for c in row if c not in index]
            if unknown:
                raise SerendipError(f"{unknown[0]!r} is not a level-{self.level} cluster of "
                                    "this model", field="candidates",
                                    fix="use cluster ids from the model's candidates")
            out.append(list(dict.fromkeys(index[c] for c in row)))
        return out

    @property
    def adjusts(self) -> bool:
        """Does this model add a transition prior to its answers' scores?"""
        return self.prior is not None and self.prior_weight > 0

    def _use_likelihood(self, k: int, pairs, owns=()) -> bool:
        if pairs is not None or self.decoding == "likelihood":
            return True
        if self.adjusts and any(o is not None for o in owns):
            return True            # the prior re-ranks exact candidate scores, not beams
        return self.decoding == "auto" and k > 1

    def _likelihood(self, batch: list[Encoded], k: int, pairs, owns=None
                    ) -> list[list[Prediction]]:
        """Exact top-k by scoring every (allowed) candidate as a continuation (one prompt
        encoding per input, its KV cache reused for all candidates)."""
        from serendip.mllm.likelihood import score_candidates

        cot = self.prompt_config.strategy == "cot"
        suffixes = self._reason(batch, True) if cot else [self.marker for _ in batch]
        inputs = to_device(collate_generate(batch, self.pad_id, suffixes), self.model.device)
        scores = score_candidates(self.model, inputs, self._candidate_ids, pairs,
                                  pad_id=self.pad_id)
        out = []
        for i, row in enumerate(scores):
            idx = pairs[i] if pairs is not None else list(range(len(self.descriptions)))
            rank = row
            if self.adjusts and owns is not None and owns[i] is not None:
                adj = self.prior.log_prior(owns[i], [self.cluster_ids[j] for j in idx])
                rank = row.double() + self.prior_weight * torch.from_numpy(adj)
            order = torch.argsort(rank, descending=True, stable=True)[:k].tolist()
            reasoning = self._decode_reasoning(suffixes[i]) if cot else None
            out.append([Prediction(self.cluster_ids[idx[j]], self.descriptions[idx[j]],
                                   float(torch.exp(row[j])), reasoning) for j in order])
        return out

    def _images_for(self, x: dict, i: int) -> list:
        cfg = self.prompt_config
        if not cfg.uses_images:
            return []
        if x.get("images"):      # the thumbnail, or frames sampled as curation sampled them
            imgs = list(x["images"])
            return select_images(cfg, imgs[0], imgs)
        if x.get("thumbnail") is not None or x.get("frames") is not None:
            return select_images(cfg, x.get("thumbnail"), x.get("frames"))
        raise SerendipError(f"input {i} has no images but strategy {cfg.strategy!r} needs them",
                            field="images", fix="pass images (or thumbnail/frames) per input")

    def _generate(self, inputs: dict, **kwargs):
        gen_kwargs = dict(do_sample=False, pad_token_id=self.pad_id, eos_token_id=self.eos_id,
                          return_dict_in_generate=True)
        gen_kwargs.update(kwargs)
        return self.model.generate(**to_device(inputs, self.model.device), **gen_kwargs)

    def _reason(self, batch: list[Encoded], constrained: bool) -> list[list[int]]:
        """Chain of thought, phase 1: reasoning ids up to and including the marker, per row."""
        inputs = collate_generate(batch, self.pad_id)
        start = inputs["input_ids"].shape[1]
        proc = ReasoningProcessor(self.marker, start, self.reasoning_tokens, self.eos_id)
        res = self._generate(inputs, max_new_tokens=self.reasoning_tokens,
                             logits_processor=[proc] if constrained else None)
        out = []
        for row in res.sequences[:, start:].tolist():
            end = proc.marker_end(row)
            out.append(row[:end] if end is not None else row)
        return out

    def _decode_reasoning(self, ids: Sequence[int]) -> str:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return text.rsplit("Answer:", 1)[0].strip()

    def _predict_batch(self, batch: list[Encoded], k: int, constrained: bool,
                       pairs: list[list[int]] | None = None, owns=None
                       ) -> list[list[Prediction]]:
        cot = self.prompt_config.strategy == "cot"
        if not constrained:
            return self._free(batch, k, cot)
        if self._use_likelihood(k, pairs, owns or ()):
            return self._likelihood(batch, k, pairs, owns)
        k = min(k, len(self.descriptions))
        suffixes = self._reason(batch, True) if cot else [self.marker for _ in batch]
        inputs = collate_generate(batch, self.pad_id, suffixes)
        start = inputs["input_ids"].shape[1]
        trie_proc = TrieLogitsProcessor(self.trie, start, fallback=self.pad_id)
        beams = max(k, 1)
        res = self._generate(inputs, max_new_tokens=self.trie.max_len,
                             logits_processor=[trie_proc], num_beams=beams,
                             num_return_sequences=k, length_penalty=0.0,
                             output_logits=beams == 1, output_scores=beams > 1)
        seqs = res.sequences[:, start:]
        if beams == 1:
            logp = _greedy_logprob(res.logits, seqs, self.pad_id)
        else:
            logp = res.sequences_scores
        out: list[list[Prediction]] = []
        for i in range(len(batch)):
            preds, seen = [], set()
            reasoning = self._decode_reasoning(suffixes[i]) if cot else None
            for j in range(i * k, (i + 1) * k):
                idx = self.trie.lookup(self._until_eos(seqs[j].tolist()))
                if idx is None or idx in seen:     # cannot happen for a complete beam
                    continue
                seen.add(idx)
                preds.append(Prediction(self.cluster_ids[idx], self.descriptions[idx],
                                        float(torch.exp(logp[j])), reasoning))
            out.append(preds)
        return out

    def _until_eos(self, row: list[int]) -> list[int]:
        """Generated ids up to and including the first EOS (beam search pads finished beams
        with EOS or pad, depending on the version)."""
        return row[:row.index(self.eos_id) + 1] if self.eos_id in row else row

    def _free(self, batch: list[Encoded], k: int, cot: bool) -> list[list[Prediction]]:
        inputs = collate_generate(batch, self.pad_id)
        start = inputs["input_ids"].shape[1]
        budget = (self.reasoning_tokens if cot else 0) + len(self.marker) + self.trie.max_len + 4
        res = self._generate(inputs, max_new_tokens=budget, num_beams=k,
                             num_return_sequences=k, length_penalty=0.0, output_logits=k == 1,
                             output_scores=k > 1)
        seqs = res.sequences[:, start:]
        logp = _greedy_logprob(res.logits, seqs, self.pad_id) if k == 1 else res.sequences_scores
        out = []
        for i in range(len(batch)):
            preds = []
            for j in range(i * k, (i + 1) * k):
                text = self.tokenizer.decode(seqs[j].tolist(), skip_special_tokens=True)
                answer = parse_answer(text)
                preds.append(Prediction(self._by_description.get(answer), answer,
                                        float(torch.exp(logp[j])),
                                        self._decode_reasoning(seqs[j].tolist()) if cot else None))
            out.append(preds)
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, out_dir: str | os.PathLike, extra_meta: dict | None = None,
             base_src: str | os.PathLike | None = None) -> Path:
        """Write the model directory (safetensors + processor + ``serendip.json``) atomically.

        An adapter model is self-contained when ``base_src`` (a save_pretrained directory of
        its base) is given — it is copied to ``base/``; otherwise ``extra_meta['base_model']``
        must be a path that stays readable.
        """
        out = Path(out_dir)
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.processor.save_pretrained(tmp / "processor")
        meta = {"format_version": FORMAT_VERSION, "level": self.level,
                "prompt": prompt_manifest(self.prompt_config),
                "candidates": [{"cluster_id": c, "description": d}
                               for c, d in zip(self.cluster_ids, self.descriptions)],
                "image_size": self.image_size, "reasoning_tokens": self.reasoning_tokens,
                "batch_size": self.batch_size}
        if self.prior is not None:
            meta.update(transition_prior=self.prior.to_json(), prior_weight=self.prior_weight)
        meta.update(extra_meta or {})
        if _is_peft(self.model):
            self.model.save_pretrained(tmp / "adapter", safe_serialization=True)
            if base_src is not None:
                shutil.copytree(base_src, tmp / "base")
                meta["base_model"] = "bundled"
            elif not meta.get("base_model") or not Path(str(meta["base_model"])).is_dir():
                raise ConfigError("an adapter needs its base model", field="base_model",
                                  fix="pass base_src, or a base_model path that stays readable")
            meta["kind"] = "adapter"
        else:
            self.model.save_pretrained(tmp / "model", safe_serialization=True)
            meta["kind"] = "full"
        meta["model_version"] = meta.get("model_version") or _weights_hash(
            tmp, {k: meta[k] for k in ("transition_prior", "prior_weight") if k in meta})
        atomic_write_bytes(tmp / META, json.dumps(meta, indent=2).encode())
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        self.model_version = self.model_version or meta["model_version"]
        return out

    @classmethod
    def load(cls, model_dir: str | os.PathLike, model_version: str | None = None,
             base_dir: str | None = None, batch_size: int | None = None,
             device: str = "auto", decoding: str = "auto") -> ClusterPredictor:
        """Load a directory written by :meth:`save` (local files only, exact round trip) onto
        ``device`` (``auto``: a GPU when one is visible)."""
        quiet_transformers()
        d = Path(model_dir)
        meta_path = d / META
        if not meta_path.exists():
            raise ConfigError(f"{d} is not a serendip model directory (no {META})",
                              field="model_dir", fix="point at mllm/<run> written by finetune")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"model format {meta.get('format_version')} is not supported",
                              field="model_dir", fix="re-run serendip finetune")
        # the prompt manifest curation wrote; models saved before it was named ``prompt`` hold
        # the same object as ``prompt_config``
        prompt = read_prompt_manifest(meta if "prompt" in meta
                                      else {"prompt": meta.get("prompt_config")},
                                      str(meta_path), fix="re-run serendip finetune")
        model, processor = load_model_dir(d, meta)
        model.to(pick_device(device))
        cand = meta["candidates"]
        return cls(model, processor, [c["cluster_id"] for c in cand],
                   [c["description"] for c in cand], prompt,
                   meta["level"], model_version or meta.get("model_version", ""),
                   image_size=meta.get("image_size"),
                   reasoning_tokens=meta.get("reasoning_tokens", 32),
                   batch_size=batch_size or meta.get("batch_size", 32), base_dir=base_dir,
                   decoding=decoding, **_prior_of(meta, str(meta_path)))


def _prior_of(meta: dict, source: str) -> dict:
    """The ``prior`` / ``prior_weight`` arguments of a saved model (none before priors)."""
    if meta.get("transition_prior") is None:
        return {}
    return {"prior": TransitionPrior.from_json(meta["transition_prior"], source),
            "prior_weight": float(meta.get("prior_weight", 0.0))}


def read_meta(model_dir: str | os.PathLike) -> dict:
    return json.loads((Path(model_dir) / META).read_text())


def load_model_dir(d: Path, meta: dict | None = None):
    """(model, processor) of a saved model directory; adapters stay unmerged (exact outputs)."""
    from transformers import AutoModelForImageTextToText

    meta = meta or read_meta(d)
    processor = load_processor(d / "processor")
    if meta["kind"] == "full":
        model = AutoModelForImageTextToText.from_pretrained(d / "model", local_files_only=True)
    else:
        from peft import PeftModel

        base_ref = meta.get("base_model")
        base_path = d / "base" if base_ref == "bundled" else Path(str(base_ref))
        if (base_path / META).exists():          # an earlier serendip model as the base
            base = load_model_dir(base_path)[0]
            base = base.merge_and_unload() if _is_peft(base) else base
        else:
            base, _ = load_base(base_path, with_processor=False)
        model = PeftModel.from_pretrained(base, d / "adapter", is_trainable=False)
    return model.eval(), processor


def _autocast(device: torch.device):
    """bf16 autocast on a CUDA device that supports it (scores are taken from float32
    log-softmax either way); a no-op context elsewhere."""
    use = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use)


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config")


def _weights_hash(d: Path, scoring: dict | None = None) -> str:
    """12 hex digits of the weights (and of the scoring settings — the transition prior and
    its weight — that change the answers of the same weights)."""
    h = hashlib.sha256()
    if scoring:
        h.update(json.dumps(scoring, sort_keys=True).encode())
    for p in sorted(d.rglob("*.safetensors")):
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


def _greedy_logprob(logits: Sequence[torch.Tensor], seqs: torch.Tensor, pad_id: int
                    ) -> torch.Tensor:
    """Sum of log p(token) over generated tokens (raw logits, so unrenormalised), pads ignored."""
    total = torch.zeros(seqs.shape[0], device=seqs.device)
    for t, step_logits in enumerate(logits):
        if t >= seqs.shape[1]:
            break
        lp = torch.log_softmax(step_logits.float(), dim=-1)
        tok = seqs[:, t]
        val = lp.gather(1, tok[:, None]).squeeze(1)
        total += torch.where(tok == pad_id, torch.zeros_like(val), val)
    return total


__all__ = ["ClusterPredictor", "Prediction", "load_model_dir", "read_meta", "left_pad"]
