"""Exact top-k over a handful of candidates by likelihood, reusing the prompt's KV cache.

With the candidates of a context limited to a few cluster descriptions (its serendipitous
siblings, or a whole small level), the exact ranking of every candidate is cheaper to get by
scoring each description as a continuation of the prompt than by beam search:

    log p(candidate | prompt) = Σ_t log softmax(logits_t)[token_t]

over the candidate's tokens (``" " + description`` and EOS, exactly the trie's sequences).
The prompt (and its images — the expensive part of a VLM forward) is encoded **once**; then
**one** more forward per batch scores every candidate of every prompt: each prompt's candidates
are packed as a token trie (shared prefixes such as ``"sports > "`` appear once) into one row
that continues the prompt's KV cache, with a tree attention mask (a node sees the prompt and
its own ancestors, never a sibling branch) and positions ``prompt length + depth``. So the
cache is neither copied nor repeated per candidate, and the forward costs one token per trie
node. The first token's probability comes from the prompt's last logits.

Like the trie-constrained decoder's scores these are full-vocabulary probabilities (not
renormalised over the candidates), so the two are comparable, and the greedy trie answer is
the argmax whenever greedy search finds it. Positions follow ``generate`` (cumulative
attention mask; 3-D M-RoPE positions from the model's ``rope_deltas`` for Qwen2-VL-style
models), so scores match the decoder's to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from serendip.errors import ConfigError


def _mrope_owner(model):
    """The submodule that keeps M-RoPE ``rope_deltas`` (Qwen2-VL family), or None."""
    for m in model.modules():
        if hasattr(m, "rope_deltas") and hasattr(m, "get_rope_index"):
            return m
    return None


@torch.inference_mode()
def score_candidates(model, inputs: dict, candidates: Sequence[Sequence[int]],
                     pairs: Sequence[Sequence[int]] | None = None, pad_id: int = 0
                     ) -> list[torch.Tensor]:
    """Log-likelihood of candidate token sequences as continuations of each prompt.

    Args:
        model: a causal (vision-)language model (plain or peft-wrapped) whose forward takes
            ``cache``, ``position_ids`` and a 4-D additive ``attention_mask`` and returns
            ``logits`` and ``cache`` (transformers 5).
        inputs: the left-padded prompt batch (``input_ids``, ``attention_mask`` (B, P), and
            the processor's image tensors), already on the model's device.
        candidates: C token-id sequences (each >= 1 token; e.g. description ids + EOS).
        pairs: per prompt, the candidate indices to score (None: all C for every prompt).
        pad_id: id of the padding nodes of shorter tries (masked out).

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
    mask = inputs["attention_mask"]
    mrope = _mrope_owner(model)
    kwargs = dict(inputs)
    if mrope is None or "image_grid_thw" not in inputs:   # M-RoPE models compute their own
        kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    if mrope is not None:
        mrope.rope_deltas = None                 # recomputed from this prompt batch
    out = model(**kwargs, use_cache=True, logits_to_keep=1)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)             # (B, V)
    deltas = mrope.rope_deltas if mrope is not None else None
    try:
        tries = [_Packed([candidates[j] for j in row]) for row in pairs]
        rest = None
        if any(t.nodes for t in tries):
            rest = _tree_forward(model, cache, tries, mask, deltas, pad_id)
    finally:
        if mrope is not None:
            mrope.rope_deltas = None
    # one gather for every (prompt, candidate) first token and every (prompt, node, token) step
    prompt_of = [i for i, row in enumerate(pairs) for _ in row]
    first_tok = [candidates[j][0] for row in pairs for j in row]
    total = first[torch.tensor(prompt_of), torch.tensor(first_tok)]
    if rest is not None:
        owner, pi, ni, ti = [], [], [], []
        flat = 0
        for i, t in enumerate(tries):
            for path in t.paths:
                for node, tok in path:
                    owner.append(flat)
                    pi.append(i)
                    ni.append(node)
                    ti.append(tok)
                flat += 1
        if owner:
            steps = rest[torch.tensor(pi), torch.tensor(ni), torch.tensor(ti)]
            total = total.index_add(0, torch.tensor(owner, device=total.device), steps)
    total = total.float().cpu()
    return list(torch.split(total, [len(row) for row in pairs]))


class _Packed:
    """One prompt's candidates as a token trie: ``nodes`` are (token, parent node or -1)
    for every proper prefix (the tokens fed), ``paths[k]`` the (node, next token) pairs whose
    log-probabilities add up to candidate k's (after its first token)."""

    def __init__(self, seqs: Sequence[Sequence[int]]):
        self.nodes: list[tuple[int, int]] = []
        self.depth: list[int] = []
        self.paths: list[list[tuple[int, int]]] = []
        index: dict[tuple[int, int], int] = {}
        for seq in seqs:
            parent, path = -1, []
            for t in range(len(seq) - 1):
                key = (parent, int(seq[t]))
                node = index.get(key)
                if node is None:
                    node = index[key] = len(self.nodes)
                    self.nodes.append(key[::-1])
                    self.depth.append(t)
                path.append((node, int(seq[t + 1])))
                parent = node
            self.paths.append(path)


def _tree_forward(model, cache, tries: list[_Packed], mask: torch.Tensor, deltas, pad_id: int
                  ) -> torch.Tensor:
    """log softmax of the logits at every trie node, (B, Q, V), by one forward that
    continues the prompts' cache under a tree attention mask."""
    device = mask.device
    b, p = mask.shape
    q = max(len(t.nodes) for t in tries)
    ids = torch.full((b, q), pad_id, dtype=torch.long)
    depth = torch.zeros((b, q), dtype=torch.long)
    see = torch.zeros((b, q, q), dtype=torch.bool)          # node -> ancestors and itself
    for i, t in enumerate(tries):
        for n, (tok, parent) in enumerate(t.nodes):
            ids[i, n] = tok
            depth[i, n] = t.depth[n]
            see[i, n, n] = True
            if parent >= 0:
                see[i, n] |= see[i, parent]
        for n in range(len(t.nodes), q):                    # padding nodes: themselves only
            see[i, n, n] = True
    valid = torch.tensor([[n < len(t.nodes) for n in range(q)] for t in tries])
    prompt = mask.bool().cpu()[:, None, :].expand(b, q, p) & valid[:, :, None]
    allowed = torch.cat([prompt, see], dim=2)[:, None]      # (B, 1, Q, P + Q)
    dtype = (torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type)
             else next(model.parameters()).dtype)
    attn = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed,
                                                              torch.finfo(dtype).min)
    pos = mask.long().sum(-1).cpu()[:, None] + depth                       # (B, Q)
    pos = pos.to(device)
    if deltas is not None:
        pos = pos[None].expand(3, -1, -1) + deltas[None]
    out = model(input_ids=ids.to(device), attention_mask=attn.to(device), position_ids=pos,
                cache=cache, use_cache=True)
    return torch.log_softmax(out.logits.float(), dim=-1)
