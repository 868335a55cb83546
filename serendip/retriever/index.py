"""The served retriever: a trained :class:`SASRec` plus a per-cluster item index.

``retrieve(history, cluster_id, k)`` scores only the items of the requested cluster (an index
of vocabulary positions per cluster id, any level), masks what the user has already seen, and
returns at most ``k`` ``(item_id, score)`` pairs — fewer when the cluster is small, never a
``-1``/padding entry, never an item outside the cluster (the Merlin/Faiss pitfalls, PEERS.md).

Saved directory (no pickle anywhere):

* ``config.json``      — :class:`RetrieverConfig`, model shape, metrics, model version
* ``model.safetensors`` — weights (the item embedding table is the output layer)
* ``index.parquet``    — vocabulary order: item_id, popularity, c1..c4
* ``retriever.pt``     — TorchScript ``forward(seq, lengths) -> logits`` for Triton/KServe
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from serendip.data.io import atomic_write_bytes, atomic_write_parquet
from serendip.errors import SerendipError
from serendip.retriever.model import SASRec

FORMAT_VERSION = 1
LEVELS = ("c1", "c2", "c3", "c4")


class Retriever:
    """Cluster-restricted top-k over a trained sequence model (see the module docstring)."""

    def __init__(self, model: SASRec, item_ids: Sequence[str], popularity: np.ndarray,
                 clusters: dict[str, Sequence[str | None]] | None, config: dict):
        self.model = model.eval()
        self.item_ids = list(item_ids)                     # vocabulary position p ↔ index p + 1
        self.pos = {item: p for p, item in enumerate(self.item_ids)}
        self.popularity = np.asarray(popularity, dtype=np.float32)
        self.config = config
        self.clusters = {lvl: list(col) for lvl, col in (clusters or {}).items()}
        self._index = self._build_index(self.clusters)
        self.max_len = model.max_len
        self.refresh()

    def refresh(self) -> None:
        """Recompute the cached item vectors (after the model's weights changed)."""
        with torch.inference_mode():
            self._emb = self.model.item_vectors()[1:].numpy().copy()   # [n_items, dim]
            self._bias = self.model.item_bias[1:].numpy().copy()

    @staticmethod
    def _build_index(clusters: dict[str, list[str | None]]) -> dict[str, np.ndarray]:
        index: dict[str, list[int]] = {}
        for col in clusters.values():
            for p, cid in enumerate(col):
                if cid is not None:
                    index.setdefault(cid, []).append(p)
        return {cid: np.asarray(ps, dtype=np.int64) for cid, ps in index.items()}

    # ------------------------------------------------------------------ queries
    @property
    def model_version(self) -> str:
        return str(self.config.get("model_version", "unversioned"))

    @property
    def cluster_ids(self) -> list[str]:
        return sorted(self._index)

    def has_cluster(self, cluster_id: str) -> bool:
        return cluster_id in self._index

    def _encode(self, histories: list[list[int]]) -> np.ndarray:
        """Histories of vocabulary positions (non-empty) → user vectors [B, dim]."""
        t = max(len(h) for h in histories)
        seq = torch.zeros((len(histories), t), dtype=torch.long)
        for i, h in enumerate(histories):
            seq[i, : len(h)] = torch.as_tensor(h, dtype=torch.long) + 1
        lengths = torch.as_tensor([len(h) for h in histories], dtype=torch.long)
        with torch.inference_mode():
            return self.model.encode(seq, lengths).numpy()

    def _top(self, scores: np.ndarray, cand: np.ndarray, seen: np.ndarray, k: int
             ) -> list[tuple[str, float]]:
        if len(seen):
            keep = ~np.isin(cand, seen)
            cand, scores = cand[keep], scores[keep]
        if k <= 0 or len(cand) == 0:
            return []
        k = min(k, len(cand))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(cand) else np.arange(len(cand))
        # stable order: score desc, then vocabulary position (deterministic ties)
        top = top[np.lexsort((cand[top], -scores[top]))]
        return [(self.item_ids[int(cand[j])], float(scores[j])) for j in top]

    def retrieve(self, history: Sequence[str], cluster_id: str | None, k: int,
                 exclude_seen: bool = True) -> list[tuple[str, float]]:
        """Top-``k`` ``(item_id, score)`` inside ``cluster_id`` (``None``: whole catalogue)."""
        return self.retrieve_batch([history], [cluster_id], k, exclude_seen)[0]

    def retrieve_batch(self, histories: Sequence[Sequence[str]],
                       cluster_ids: Sequence[str | None], k: int,
                       exclude_seen: bool = True) -> list[list[tuple[str, float]]]:
        """Many requests with one forward pass; same rules as :meth:`retrieve`.

        Unknown item ids in a history are skipped; an empty (or all-unknown) history falls back
        to popularity within the cluster; an unknown cluster id gives an empty list.
        """
        if len(histories) != len(cluster_ids):
            raise SerendipError(f"{len(histories)} histories but {len(cluster_ids)} cluster ids",
                                field="cluster_ids", fix="pass one cluster id per history")
        if not isinstance(k, (int, np.integer)) or k < 0:
            raise SerendipError(f"k must be a non-negative integer, got {k!r}", field="k",
                                fix="pass k >= 0")
        known = [[self.pos[i] for i in h if i in self.pos] for h in histories]
        need = [i for i, h in enumerate(known) if h]
        vecs = self._encode([known[i][-self.max_len:] for i in need]) if need else None
        row = {i: r for r, i in enumerate(need)}
        out = []
        for i, (h, cid) in enumerate(zip(known, cluster_ids)):
            if cid is None:
                cand = np.arange(len(self.item_ids), dtype=np.int64)
            else:
                cand = self._index.get(cid)
                if cand is None:
                    out.append([])
                    continue
            if i in row:
                scores = self._emb[cand] @ vecs[row[i]] + self._bias[cand]
            else:
                scores = self.popularity[cand]
            seen = np.asarray(h, dtype=np.int64) if exclude_seen else np.empty(0, np.int64)
            out.append(self._top(scores, cand, seen, int(k)))
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, out_dir: str | Path, torchscript: bool = True) -> Path:
        """Write the directory described in the module docstring; returns it."""
        from safetensors.torch import save

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
        blob = save(state)
        self.config["model_version"] = hashlib.sha256(blob).hexdigest()[:16]
        atomic_write_bytes(out / "model.safetensors", blob)
        cols = {"item_id": pa.array(self.item_ids, pa.string()),
                "popularity": pa.array(self.popularity, pa.float32())}
        for lvl in LEVELS:
            cols[lvl] = pa.array(self.clusters.get(lvl, [None] * len(self.item_ids)), pa.string())
        atomic_write_parquet(pa.table(cols), out / "index.parquet")
        if torchscript:
            export_torchscript(self.model, out / "retriever.pt")
        self.config["format_version"] = FORMAT_VERSION
        atomic_write_bytes(out / "config.json", json.dumps(self.config, indent=2).encode())
        return out

    @classmethod
    def load(cls, model_dir: str | Path) -> Retriever:
        from safetensors.torch import load_file

        d = Path(model_dir)
        if not (d / "config.json").exists() or not (d / "model.safetensors").exists():
            raise SerendipError(f"{d} is not a saved retriever (config.json, model.safetensors)",
                                field="retriever", fix="run `serendip train-retriever` first")
        config = json.loads((d / "config.json").read_text())
        shape = config["model"]
        model = SASRec(**shape)
        model.load_state_dict(load_file(str(d / "model.safetensors")))
        t = pq.read_table(d / "index.parquet")
        clusters = {lvl: t.column(lvl).to_pylist() for lvl in LEVELS if lvl in t.column_names}
        return cls(model, t.column("item_id").to_pylist(),
                   t.column("popularity").to_numpy(), clusters, config)


def export_torchscript(model: SASRec, path: str | Path) -> Path:
    """Script the model (``forward(seq int64[B,T], lengths int64[B]) -> float[B, n_items]``)
    for Triton's PyTorch backend / KServe; saved atomically."""
    import io

    scripted = torch.jit.script(model.eval())
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
