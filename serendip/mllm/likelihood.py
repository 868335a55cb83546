"""Exact top-k over a handful of candidates by likelihood, reusing the prompt's KV cache.

With the candidates of a context limited to a few cluster descriptions (its serendipitous
siblings, or a whole small level), the exact ranking of every candidate is cheaper to get by
scoring each description as a continuation of the prompt than by beam search:

    log p(candidate | prompt) = Σ_t log softmax(logits_t)[token_t]

over the candidate's tokens (``" " + description`` and EOS, exactly the trie's sequences).
For a batch of left-padded prompts, three forwards give every score:

1. **the shared prefix** — the text all prompts of the batch start with, up to the first image
   token (a chat template's system turn: 30 of SmolLM2's ~115 prompt tokens) — once, at batch
   size 1, its KV cache then repeated per prompt;
2. **the rest of every prompt** (and its images — encoded once per item) continuing that cache,
   left-padded after the prefix under a padding mask, positions continuing the prefix's;
3. **every candidate of every prompt**: each prompt's candidates packed as a token trie (shared
   prefixes such as ``"sports > "`` appear once) in one row that continues the prompt's cache,
   under a tree attention mask (a node sees the prompt and its own ancestors, never a sibling
   branch) with positions ``prompt length + depth``. The cache is neither copied nor repeated per
   candidate, and the forward costs one token per trie node. The first token's probability
   comes from the prompt's last logits.

Step 1 is skipped (the whole prompt goes in step 2) when the prompts share no text prefix, for
M-RoPE models (Qwen2-VL: positions depend on the whole sequence) and for inputs with other
token-aligned tensors (``token_type_ids``, ``mm_token_type_ids``). Tries are built once per
distinct candidate set and kept (bounded LRU), so per-item work in Python is a few list
operations, not per-token loops.

Like the trie-constrained decoder's scores these are full-vocabulary probabilities (not
renormalised over the candidates), so the two are comparable, and the greedy trie answer is
the argmax whenever greedy search finds it. Positions follow ``generate`` (cumulative
attention mask; 3-D M-RoPE positions from the model's ``rope_deltas`` for Qwen2-VL-style
models), so scores match the decoder's — and a plain uncached forward over prompt + candidate —
to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch

from serendip.errors import ConfigError

# token-aligned inputs a prompt batch may carry besides input_ids/attention_mask: with any of
# them present the prompt is encoded in one piece (their semantics span the whole sequence)
_TOKEN_ALIGNED = ("token_type_ids", "mm_token_type_ids")
_MEDIA_TOKEN_ATTRS = ("image_token_id", "image_token_index", "video_token_id",
                      "video_token_index")
_MIN_SHARED = 4          # tokens; a shorter common prefix is not worth a separate forward


def _mrope_owner(model):
    """The submodule that keeps M-RoPE ``rope_deltas`` (Qwen2-VL family), or None."""
    for m in model.modules():
        if hasattr(m, "rope_deltas") and hasattr(m, "get_rope_index"):
            return m
    return None


def _media_token_ids(model) -> set[int] | None:
    """Ids of the image/video placeholder tokens from the model's config (None: unknown)."""
    cfg = getattr(model, "config", None)
    ids = {getattr(cfg, a) for a in _MEDIA_TOKEN_ATTRS
           if isinstance(getattr(cfg, a, None), int)}
    return ids or None


@torch.inference_mode()
def score_candidates(model, inputs: dict, candidates: Sequence[Sequence[int]],
                     pairs: Sequence[Sequence[int]] | None = None, pad_id: int = 0,
                     share_prefix: bool = True) -> list[torch.Tensor]:
    """Log-likelihood of candidate token sequences as continuations of each prompt.

    Args:
        model: a causal (vision-)language model (plain or peft-wrapped) whose forward takes
            ``cache``, ``position_ids`` and a 4-D additive ``attention_mask`` and returns
            ``logits`` and ``cache`` (transformers 5).
        inputs: the left-padded prompt batch (``input_ids``, ``attention_mask`` (B, P), and
            the processor's image tensors), already on the model's device.
        candidates: C token-id sequences (each >= 1 token; e.g. description ids + EOS).
        pairs: per prompt, the candidate indices to score (None: all C for every prompt);
            prompts may have different numbers of candidates.
        pad_id: id of the padding nodes of shorter tries (masked out).
        share_prefix: encode the prompts' common text prefix once (step 1 above); False
            encodes every prompt whole (same scores to float rounding).

    Returns:
        per prompt, a float32 tensor of log-probabilities (nats, <= 0) aligned with its
        ``pairs`` row (or with all C candidates).

    Raises:
        ConfigError: an empty candidate, an index out of range, or candidate lists that do
            not match the prompts.
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
    mrope = _mrope_owner(model)
    if mrope is not None:
        mrope.rope_deltas = None                 # recomputed from this prompt batch
    try:
        out, cache, mask = _encode_prompts(model, inputs, mrope, share_prefix, pad_id)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)          # (B, V)
        deltas = mrope.rope_deltas if mrope is not None else None
        seqs = tuple(tuple(int(t) for t in c) for c in candidates)
        tries = [_packed(tuple(seqs[j] for j in row)) for row in pairs]
        total = first[torch.tensor([i for i, row in enumerate(pairs) for _ in row]),
                      torch.tensor([seqs[j][0] for row in pairs for j in row])]
        if any(t.n_nodes for t in tries):
            total = total + _tree_scores(model, cache, tries, mask, deltas, pad_id)
    finally:
        if mrope is not None:
            mrope.rope_deltas = None
    return list(torch.split(total.float().cpu(), [len(row) for row in pairs]))


def _encode_prompts(model, inputs: dict, mrope, share_prefix: bool, pad_id: int):
    """Forward over the prompt batch, via a once-encoded shared prefix where possible.

    Returns (output with the last position's logits, cache, attention mask (B, K) over the
    cache's columns: 1 = a real prompt token)."""
    mask = inputs["attention_mask"]
    k = _shared_prefix_len(model, inputs, mrope) if share_prefix else 0
    if k == 0:
        kwargs = dict(inputs)
        if mrope is None or "image_grid_thw" not in inputs:   # M-RoPE models compute their own
            kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        out = model(**kwargs, use_cache=True, logits_to_keep=1)
        return out, _cache_of(out), mask
    ids, device = inputs["input_ids"], mask.device
    b = ids.shape[0]
    lengths = mask.long().sum(-1)
    start = ids.shape[1] - lengths                          # first real column of each row
    s0 = int(start[0])
    head = model(input_ids=ids[:1, s0:s0 + k],
                 attention_mask=torch.ones((1, k), dtype=mask.dtype, device=device),
                 position_ids=torch.arange(k, device=device)[None], use_cache=True,
                 logits_to_keep=1)
    cache = _cache_of(head)
    cache.batch_repeat_interleave(b)
    # the rest of every row, left-padded to the longest rest, after the prefix's columns
    rest = ids.shape[1] - int(start.min()) - k
    cols = torch.arange(rest, device=device)[None] + (ids.shape[1] - rest)  # (1, R)
    keep = cols >= (start + k)[:, None]                                    # real tokens
    rest_ids = ids[:, -rest:].masked_fill(~keep, pad_id)
    rest_mask = keep.to(mask.dtype)
    full_mask = torch.cat([torch.ones((b, k), dtype=mask.dtype, device=device), rest_mask], 1)
    pos = (k + rest_mask.long().cumsum(-1) - 1).masked_fill(~keep, 0)
    extra = {n: v for n, v in inputs.items() if n not in ("input_ids", "attention_mask")}
    out = model(input_ids=rest_ids, attention_mask=full_mask, position_ids=pos, cache=cache,
                use_cache=True, logits_to_keep=1, **extra)
    return out, _cache_of(out), full_mask


def _cache_of(out):
    return getattr(out, "cache", None) or getattr(out, "past_key_values", None)


def _shared_prefix_len(model, inputs: dict, mrope) -> int:
    """Tokens every prompt of the batch starts with, up to (excluding) the first media
    token and leaving each prompt at least one token of its own; 0 when not shareable."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    if (ids.shape[0] < 2 or mrope is not None
            or any(k in inputs for k in _TOKEN_ALIGNED)):
        return 0
    media = _media_token_ids(model)
    has_vision = any(k not in ("input_ids", "attention_mask") for k in inputs)
    if media is None and has_vision:
        return 0
    lengths = mask.long().sum(-1).tolist()
    p = ids.shape[1]
    rows = [r[p - n:] for r, n in zip(ids.tolist(), lengths)]      # one device-to-host copy
    limit = min(lengths) - 1
    first = rows[0]
    k = 0
    while (k < limit and first[k] not in (media or ())
           and all(r[k] == first[k] for r in rows)):
        k += 1
    return k if k >= _MIN_SHARED else 0


class _Packed:
    """One prompt's candidates as a token trie (tensors, built once per candidate set).

    ``tok``/``depth`` (n,) are the fed tokens (every proper prefix) and their depth, ``anc``
    (n, n) bool: node → itself and its ancestors; ``step_node``/``step_tok``/``step_owner``
    list every (node, next token, candidate) whose log-probabilities add up to a candidate's
    score after its first token."""

    def __init__(self, seqs: Sequence[Sequence[int]]):
        nodes: list[tuple[int, int]] = []            # (token, parent)
        depth: list[int] = []
        index: dict[tuple[int, int], int] = {}
        step_node, step_tok, step_owner = [], [], []
        for c, seq in enumerate(seqs):
            parent = -1
            for t in range(len(seq) - 1):
                key = (parent, seq[t])
                node = index.get(key)
                if node is None:
                    node = index[key] = len(nodes)
                    nodes.append((seq[t], parent))
                    depth.append(t)
                step_node.append(node)
                step_tok.append(seq[t + 1])
                step_owner.append(c)
                parent = node
        n = self.n_nodes = len(nodes)
        anc = torch.eye(n, dtype=torch.bool)
        for i, (_, parent) in enumerate(nodes):    # parents precede their children
            if parent >= 0:
                anc[i] |= anc[parent]
        self.anc = anc
        self.tok = torch.tensor([t for t, _ in nodes], dtype=torch.long)
        self.depth = torch.tensor(depth, dtype=torch.long)
        self.step_node = torch.tensor(step_node, dtype=torch.long)
        self.step_tok = torch.tensor(step_tok, dtype=torch.long)
        self.step_owner = torch.tensor(step_owner, dtype=torch.long)
        self.n_candidates = len(seqs)


# Each entry holds an n_nodes x n_nodes ancestor mask (MBs for a level's every cluster); typical
# use needs one entry per candidate set (an own cluster's siblings, or all clusters).
@lru_cache(maxsize=256)
def _packed(seqs: tuple[tuple[int, ...], ...]) -> _Packed:
    return _Packed(seqs)


def _tree_scores(model, cache, tries: list[_Packed], mask: torch.Tensor, deltas, pad_id: int
                 ) -> torch.Tensor:
    """Per (prompt, candidate), flattened: the summed log-probabilities of the candidate's
    tokens after the first, by one forward that continues the prompts' cache under a tree
    attention mask."""
    device = mask.device
    b, p = mask.shape
    q = max(t.n_nodes for t in tries) or 1
    ids = torch.full((b, q), pad_id, dtype=torch.long)
    depth = torch.zeros((b, q), dtype=torch.long)
    see = torch.eye(q, dtype=torch.bool).repeat(b, 1, 1)   # padding nodes: themselves only
    valid = torch.zeros((b, q), dtype=torch.bool)
    for i, t in enumerate(tries):
        n = t.n_nodes
        ids[i, :n] = t.tok
        depth[i, :n] = t.depth
        see[i, :n, :n] = t.anc
        valid[i, :n] = True
    prompt = mask.bool().cpu()[:, None, :] & valid[:, :, None]             # (B, Q, P)
    allowed = torch.cat([prompt, see], dim=2)[:, None]                      # (B, 1, Q, P + Q)
    dtype = (torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type)
             else next(model.parameters()).dtype)
    attn = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed,
                                                              torch.finfo(dtype).min)
    pos = mask.long().sum(-1).cpu()[:, None] + depth                        # (B, Q)
    pos = pos.to(device)
    if deltas is not None:
        pos = pos[None].expand(3, -1, -1) + deltas[None]
    out = model(input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=pos,
                cache=cache, use_cache=True)
    logits = out.logits.float()                                             # (B, Q, V)
    lse = torch.logsumexp(logits, dim=-1)                                   # (B, Q)
    # one gather for every (prompt, node, next token) step of every candidate
    counts = torch.tensor([len(t.step_owner) for t in tries])
    n_cand = torch.tensor([t.n_candidates for t in tries])
    offset = (torch.cumsum(n_cand, 0) - n_cand).tolist()
    pi = torch.repeat_interleave(torch.arange(b), counts).to(device)
    ni = torch.cat([t.step_node for t in tries]).to(device)
    ti = torch.cat([t.step_tok for t in tries]).to(device)
    owner = torch.cat([t.step_owner + o for t, o in zip(tries, offset)]).to(device)
    steps = logits[pi, ni, ti] - lse[pi, ni]
    return torch.zeros(int(n_cand.sum()), device=device).index_add(0, owner, steps)
