"""SASRec-style sequence model: causal self-attention over a user's recent items, with the item
embedding table tied to the output layer (Kang & McAuley 2018), written nanoGPT-plain.

Index 0 is padding. Sequences are *right*-padded: with causal attention a real position never
attends to a later (padding) one, so no key-padding mask is needed and no row is ever fully
masked (which would give NaNs); the user's state is read at position ``length - 1``.
Everything here is TorchScript-scriptable (``torch.jit.script``) for serving.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """Pre-norm transformer block with causal scaled-dot-product attention."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        h = self.heads
        q = q.view(b, t, h, d // h).transpose(1, 2)
        k = k.view(b, t, h, d // h).transpose(1, 2)
        v = v.view(b, t, h, d // h).transpose(1, 2)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.mlp(self.ln2(x)))


class SASRec(nn.Module):
    """Item sequence → next-item logits over the whole catalogue (tied item embeddings).

    With ``n_clusters > 0`` an item's vector is its own embedding plus the embeddings of its
    c1..c4 clusters (side information shared by all items of a cluster, as in SASRec variants
    with categories): sparse items borrow strength from their topic, so the model learns
    "stay in the context's leaf" once instead of once per item. The item → cluster map is a
    buffer, so the saved weights and the TorchScript export are self-contained.
    """

    def __init__(self, n_items: int, dim: int = 64, layers: int = 2, heads: int = 2,
                 max_len: int = 50, dropout: float = 0.2, n_clusters: int = 0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be a multiple of heads {heads}")
        self.n_items = n_items                      # real items; vocabulary is n_items + 1
        self.max_len = max_len
        self.item_emb = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.cluster_emb = nn.Embedding(n_clusters + 1, dim, padding_idx=0)
        self.item_bias = nn.Parameter(torch.zeros(n_items + 1))   # learned popularity prior
        # [n_items + 1, 4] cluster vocabulary index per level, 0 = none
        self.register_buffer("item_clusters", torch.zeros(n_items + 1, 4, dtype=torch.long))
        self.pos_emb = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([Block(dim, heads, dropout) for _ in range(layers)])
        self.ln = nn.LayerNorm(dim)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def item_vectors(self) -> torch.Tensor:
        """[n_items + 1, dim]: item embedding + its clusters' embeddings (row 0 = padding)."""
        return self.item_emb.weight + self.cluster_emb(self.item_clusters).sum(1)

    def hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """[B, T] item indices (right-padded with 0) → [B, T, dim] causal states."""
        t = seq.shape[1]
        pos = torch.arange(t, device=seq.device)
        items = self.item_vectors()[seq]
        x = self.drop(items * (self.item_emb.embedding_dim ** 0.5) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.ln(x)

    def encode(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """User state after the last real item: [B, dim]."""
        h = self.hidden(seq)
        idx = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, h.shape[2])
        return h.gather(1, idx).squeeze(1)

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Next-item logits [B, n_items] for real items 1..n (padding column dropped)."""
        return self.encode(seq, lengths) @ self.item_vectors()[1:].t() + self.item_bias[1:]

    def train_logits(self, seq: torch.Tensor) -> torch.Tensor:
        """Logits at every position [B, T, n_items + 1] for the shifted next-item loss."""
        return self.hidden(seq) @ self.item_vectors().t() + self.item_bias
