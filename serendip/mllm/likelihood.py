"""Exact top-k over a handful of candidates by likelihood, reusing the prompt's KV cache.

With the candidates of a context limited to a few cluster descriptions (its serendipitous
siblings, or a whole small level), the exact ranking of every candidate is cheaper to get by
scoring each description as a continuation of the prompt than by beam search: the prompt (and
its images — the expensive part of a VLM forward) is encoded **once**, its key/value cache is
copied to one row per (prompt, candidate) pair, and one more forward over the candidates'
tokens gives every pair's log-likelihood

    log p(candidate | prompt) = Σ_t log softmax(logits_t)[token_t]

over the candidate's tokens (``" " + description`` and EOS, exactly the trie's sequences), with
the first token's probability from the prompt's last logits. Like the trie-constrained
decoder's scores these are full-vocabulary probabilities (not renormalised over the
candidates), so the two are comparable and the greedy trie answer is the argmax whenever greedy
search finds it. Positions follow ``generate`` (cumulative attention mask; 3-D M-RoPE positions
from the model's ``rope_deltas`` for Qwen2-VL-style models), so scores match the decoder's to
float rounding.

Pairs are processed in chunks whose copied cache stays under ``max_cache_bytes``; the cache is
a transformers ``DynamicCache`` (``cache.layers[i].keys/values``, batch first).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from serendip.errors import ConfigError

DEFAULT_CACHE_BYTES = 256 * 2**20


def _mrope_owner(model):
    """The submodule that keeps M-RoPE ``rope_deltas`` (Qwen2-VL family), or None."""
    for m in model.modules():
        if hasattr(m, "rope_deltas") and hasattr(m, "get_rope_index"):
            return m
    return None


def _select_cache(cache, rows: torch.Tensor):
    """A new ``DynamicCache`` holding batch rows ``rows`` of ``cache`` (repeats allowed)."""
    from transformers import DynamicCache

    layers = getattr(cache, "layers", None)
    if layers is None:
        raise ConfigError(f"cannot reuse a {type(cache).__name__} for likelihood scoring",
                          field="decoding", fix="use decoding='beam' for this model")
    return DynamicCache(ddp_cache_data=[(layer.keys.index_select(0, rows),
                                         layer.values.index_select(0, rows))
                                        for layer in layers])


def _cache_row_bytes(cache) -> int:
    return sum((layer.keys[0].numel() + layer.values[0].numel()) * layer.keys.element_size()
               for layer in cache.layers)


@torch.inference_mode()
def score_candidates(model, inputs: dict, candidates: Sequence[Sequence[int]],
                     pairs: Sequence[Sequence[int]] | None = None, pad_id: int = 0,
                     max_cache_bytes: int = DEFAULT_CACHE_BYTES) -> list[torch.Tensor]:
    """Log-likelihood of candidate token sequences as continuations of each prompt.

    Args:
        model: a causal (vision-)language model (plain or peft-wrapped) whose forward takes
            ``cache`` and ``position_ids`` and returns ``logits`` and ``cache``.
        inputs: the left-padded prompt batch (``input_ids``, ``attention_mask`` (B, P), and
            the processor's image tensors), already on the model's device.
        candidates: C token-id sequences (each >= 1 token; e.g. description ids + EOS).
        pairs: per prompt, the candidate indices to score (None: all C for every prompt).
        pad_id: id used to right-pad the candidates' tokens (masked out).
        max_cache_bytes: bound on the prompt cache copied per chunk of pairs.

    Returns:
        per prompt, a float32 tensor of log-probabilities (nats, <= 0) aligned with its
        ``pairs`` row (or with all C candidates).

    Raises:
        ConfigError: an empty candidate, an index out of range, or a model whose cache
            cannot be reused.
    """
    n_prompts = inputs["input_ids"].shape[0]
    if not candidates or any(len(c) == 0 for c in candidates):
        raise ConfigError("empty candidate sequence", field="candidates",
                          fix="give every candidate at least one token")
    if pairs is None:
        pairs = [list(range(len(candidates)))] * n_prompts
    if len(pairs) != n_prompts:
        raise ConfigError(f"{len(pairs)} candidate lists for {n_prompts} prompts",
                          field="candidates", fix="give one candidate list per prompt")
    for row in pairs:
        if any(not 0 <= j < len(candidates) for j in row):
            raise ConfigError("candidate index out of range", field="candidates",
                              fix=f"use indices in 0..{len(candidates) - 1}")
    device = inputs["input_ids"].device
    mask = inputs["attention_mask"]
    mrope = _mrope_owner(model)
    kwargs = dict(inputs)
    if mrope is None or "image_grid_thw" not in inputs:   # M-RoPE models compute their own
        kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    if mrope is not None:
        mrope.rope_deltas = None                 # recomputed from this prompt batch
    out = model(**kwargs, use_cache=True, logits_to_keep=1)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)           # (B, V)
    deltas = mrope.rope_deltas if mrope is not None else None
    n_real = mask.long().sum(-1)                                             # (B,)

    flat = [(i, j) for i, row in enumerate(pairs) for j in row]
    scores = torch.zeros(len(flat), dtype=torch.float32)
    first_tok = torch.tensor([candidates[j][0] for _, j in flat], device=device)
    prompt_of = torch.tensor([i for i, _ in flat], device=device)
    scores += first[prompt_of, first_tok].float().cpu()
    longest = max(len(candidates[j]) for _, j in flat)
    if longest > 1:
        per_row = max(1, max_cache_bytes // max(1, _cache_row_bytes(cache)))
        for s in range(0, len(flat), per_row):
            chunk = flat[s:s + per_row]
            scores[s:s + len(chunk)] += _continuation(
                model, cache, chunk, candidates, mask, n_real, deltas, pad_id, device)
    if mrope is not None:
        mrope.rope_deltas = None
    result, pos_ = [], 0
    for row in pairs:
        result.append(scores[pos_:pos_ + len(row)])
        pos_ += len(row)
    return result


def _continuation(model, cache, chunk, candidates, mask, n_real, deltas, pad_id, device
                  ) -> torch.Tensor:
    """Σ log p(token_t | prompt, token_<t) for t >= 1 of each (prompt, candidate) pair."""
    rows = torch.tensor([i for i, _ in chunk], device=device)
    seqs = [list(candidates[j]) for _, j in chunk]
    n = max(len(s) for s in seqs) - 1
    ids = torch.full((len(chunk), n), pad_id, dtype=torch.long, device=device)
    tgt = torch.full((len(chunk), n), -1, dtype=torch.long, device=device)
    cmask = torch.zeros((len(chunk), n), dtype=torch.long, device=device)
    for r, s in enumerate(seqs):
        m = len(s) - 1
        if m:
            ids[r, :m] = torch.tensor(s[:-1], device=device)
            tgt[r, :m] = torch.tensor(s[1:], device=device)
            cmask[r, :m] = 1
    attn = torch.cat([mask.index_select(0, rows), torch.ones_like(cmask)], dim=1)
    steps = torch.arange(n, device=device)[None, :]
    pos = n_real.index_select(0, rows)[:, None] + steps                        # (N, n)
    if deltas is not None:
        pos = pos[None].expand(3, -1, -1) + deltas.index_select(0, rows)[None]
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos,
                cache=_select_cache(cache, rows), use_cache=True)
    logp = torch.log_softmax(out.logits.float(), dim=-1)
    picked = logp.gather(2, tgt.clamp(min=0)[..., None]).squeeze(2)
    return (picked * cmask).sum(1).cpu()
