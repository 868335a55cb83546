"""Train the sequence retriever on user sessions and gate it on held-out next items.

Sequences: interactions ordered by (user, ts); a row adds its context item unless it continues
the previous row's next item, then its next item — so a session ``a→b, b→c`` becomes
``a b c``. The last ``holdout`` items of each user are held out: the model must rank the true
next item inside *its own* cluster (the serving situation: the MLLM picked the cluster, the
retriever picks the items), against a popularity-within-cluster baseline on the same cases.
Only held-out items the user has not seen before count (seen items are excluded at serving).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from serendip.config import to_dict
from serendip.errors import ConfigError, SerendipError
from serendip.retriever.index import LEVELS, Retriever
from serendip.retriever.model import SASRec


@dataclass
class RetrieverConfig:
    """SASRec retriever hyper-parameters and its held-out gate (paper §2, the low level of the
    hierarchical framework); validated on construction."""

    dim: int = field(default=32, metadata={
        "help": "item embedding and transformer width; >= 1, a multiple of heads"})
    layers: int = field(default=1, metadata={"help": "transformer blocks; >= 1"})
    heads: int = field(default=2, metadata={"help": "attention heads; >= 1, dividing dim"})
    max_len: int = field(default=50, metadata={
        "help": "most recent items of a session the model attends to; >= 1"})
    dropout: float = field(default=0.2, metadata={"help": "dropout rate; in [0, 1)"})
    epochs: int = field(default=30, metadata={
        "help": "training epochs at most (early stopping on validation NDCG); >= 1"})
    patience: int = field(default=3, metadata={
        "help": "epochs without validation improvement before stopping; >= 0 (0: off)"})
    batch_size: int = field(default=32, metadata={"help": "training windows per step; >= 1"})
    lr: float = field(default=2e-3, metadata={"help": "AdamW learning rate; > 0"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay; >= 0"})
    holdout: int = field(default=1, metadata={
        "help": "last items per user held out for the gate metric; >= 0 (0: no gate)"})
    eval_level: int = field(default=3, metadata={
        "help": "tree level of the 'true next cluster' the held-out ranking is within; 1..4"})
    k: int = field(default=10, metadata={"help": "hit rate / NDCG cut-off, in items; >= 1"})
    seed: int = field(default=0, metadata={"help": "seed of weights, batches and dropout"})
    cluster_features: bool = field(default=True, metadata={
        "help": "add the item's c1..c4 cluster embeddings to its vector"})
    torchscript: bool = field(default=True, metadata={
        "help": "also export retriever.pt (TorchScript) for serving"})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        for name in ("dim", "layers", "heads", "max_len", "epochs", "batch_size", "k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be >= 1, got {getattr(self, name)}", field=name,
                                  fix=f"set {name} to a positive integer")
        if self.dim % self.heads:
            raise ConfigError(f"dim {self.dim} is not a multiple of heads {self.heads}",
                              field="heads", fix="choose heads dividing dim (e.g. 2 for 64)")
        if not 1 <= self.eval_level <= 4:
            raise ConfigError(f"must be in 1..4, got {self.eval_level}", field="eval_level",
                              fix="use a cluster level between 1 and 4")
        if self.patience < 0:
            raise ConfigError("must be >= 0", field="patience", fix="use 0 (off) or more")
        if self.holdout < 0:
            raise ConfigError("must be >= 0", field="holdout", fix="use 0 (no gate) or more")
        if not 0 <= self.dropout < 1:
            raise ConfigError("must be in [0, 1)", field="dropout", fix="use e.g. 0.2")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr}", field="lr", fix="use a positive learning rate")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay={self.weight_decay}", field="weight_decay",
                              fix="use >= 0")


@dataclass
class RetrieverResult:
    retriever: Retriever
    metrics: dict = field(default_factory=dict)
    out_dir: Path | None = None


def user_sequences(interactions: pa.Table) -> dict[str, list[str]]:
    """user_id → item sequence (see the module docstring), users in sorted order."""
    if interactions.num_rows == 0:
        raise SerendipError("no interactions", field="interactions",
                            fix="train the retriever on a non-empty interactions table")
    df = interactions.select(["user_id", "context_item_id", "next_item_id", "ts"]).to_pandas()
    df = df.sort_values(["user_id", "ts"], kind="stable")
    users = df["user_id"].to_numpy()
    ctx = df["context_item_id"].to_numpy()
    nxt = df["next_item_id"].to_numpy()
    new_user = np.r_[True, users[1:] != users[:-1]]
    continues = ~new_user & np.r_[False, ctx[1:] == nxt[:-1]]
    seqs: dict[str, list[str]] = {}
    for u, c, n, cont in zip(users, ctx, nxt, continues):
        s = seqs.setdefault(u, [])
        if not cont:
            s.append(c)
        s.append(n)
    return seqs


def _windows(seqs: list[np.ndarray], max_len: int) -> np.ndarray:
    """Right-padded training windows of max_len + 1 positions covering every transition once."""
    rows = []
    for s in seqs:
        end = len(s)
        while end > 1:
            start = max(0, end - max_len - 1)
            w = np.zeros(max_len + 1, dtype=np.int64)
            w[: end - start] = s[start:end]
            rows.append(w)
            end = start + 1 if start > 0 else 0
    return np.stack(rows) if rows else np.zeros((0, max_len + 1), dtype=np.int64)


def ranking_metrics(ranked: list[list[str]], targets: list[str], k: int) -> dict[str, float]:
    """Hit rate and NDCG at k (one relevant item per case)."""
    hits, ndcg = 0.0, 0.0
    for r, t in zip(ranked, targets):
        r = r[:k]
        if t in r:
            hits += 1
            ndcg += 1.0 / math.log2(r.index(t) + 2)
    n = max(len(targets), 1)
    return {f"hit@{k}": hits / n, f"ndcg@{k}": ndcg / n}


def evaluate(retriever: Retriever, cases: list[tuple[list[str], str]],
             cluster_of: dict[str, tuple], k: int, levels=(1, 2, 3, 4),
             baseline: bool = True) -> dict:
    """Model vs popularity-within-cluster on held-out (history, next item) cases, per level."""
    out: dict = {"n_cases": len(cases)}
    for level in levels:
        ok = [(h, t) for h, t in cases if t in cluster_of]
        hist = [h for h, _ in ok]
        tg = [t for _, t in ok]
        cids = [cluster_of[t][level - 1] for t in tg]
        model = retriever.retrieve_batch(hist, cids, k)
        out[f"level{level}"] = {"model": ranking_metrics([[i for i, _ in r] for r in model],
                                                         tg, k), "n": len(ok)}
        if baseline:
            pop = retriever.retrieve_batch([[]] * len(ok), cids,
                                           k + max(map(len, hist), default=0))
            pop = [[i for i, _ in p if i not in set(h)][:k] for p, h in zip(pop, hist)]
            out[f"level{level}"]["popularity"] = ranking_metrics(pop, tg, k)
    return out


@dataclass
class _Data:
    """The retriever's inputs, prepared once: the vocabulary, the training windows and the
    held-out cases."""

    item_ids: list[str]               # vocabulary: clustered items first, then the rest
    n_users: int
    cluster_cols: dict[str, list]     # c1..c4 per vocabulary position (None: unclustered)
    cluster_of: dict[str, tuple]      # clustered item -> (c1, c2, c3, c4)
    windows: torch.Tensor             # [N, max_len + 1] right-padded positions + 1
    popularity: np.ndarray            # training occurrences per vocabulary position
    cases: list[tuple[list[str], str]]   # test: (history, unseen next item)
    valid: list[tuple[list[str], str]]   # early stopping: the item before the test items


def _prepare(interactions: pa.Table, item_clusters: pa.Table | None,
             cfg: RetrieverConfig) -> _Data:
    seqs = user_sequences(interactions)
    # vocabulary: every clustered item (retrievable even if never interacted), then the rest
    clustered = item_clusters.column("item_id").to_pylist() if item_clusters is not None else []
    extra = sorted({i for s in seqs.values() for i in s} - set(clustered))
    item_ids = clustered + extra
    pos = {i: p for p, i in enumerate(item_ids)}
    cluster_cols = {}
    cluster_of: dict[str, tuple] = {}
    if item_clusters is not None:
        cols = [item_clusters.column(lvl).to_pylist() for lvl in LEVELS]
        cluster_cols = {lvl: col + [None] * len(extra) for lvl, col in zip(LEVELS, cols)}
        cluster_of = {i: tuple(c[p] for c in cols) for p, i in enumerate(clustered)}

    def unseen_tail(s: list[str], n: int) -> list[tuple[list[str], str]]:
        return [(s[:j], s[j]) for j in range(len(s) - n, len(s)) if s[j] not in set(s[:j])]

    # test: the last `holdout` items; validation (early stopping): the item before them
    train_seqs, cases, valid = [], [], []
    for s in seqs.values():
        idx = np.asarray([pos[i] + 1 for i in s], dtype=np.int64)
        h = cfg.holdout if len(s) > cfg.holdout + 1 else 0
        cases += unseen_tail(s, h)
        v = 1 if cfg.patience and len(s) - h > 2 else 0
        valid += unseen_tail(s[: len(s) - h], v)
        train_seqs.append(idx[: len(s) - h - v])
    popularity = np.zeros(len(item_ids), dtype=np.float32)
    for s in train_seqs:
        np.add.at(popularity, s - 1, 1.0)
    windows = torch.as_tensor(_windows(train_seqs, cfg.max_len))
    if len(windows) == 0:
        raise SerendipError("no user has two or more items in sequence", field="interactions",
                            fix="train on sessions with at least one context → next transition")
    return _Data(item_ids, len(seqs), cluster_cols, cluster_of, windows, popularity, cases,
                 valid)


def _build(data: _Data, cfg: RetrieverConfig) -> Retriever:
    """A fresh SASRec (item biases start at the log popularity prior; the sequence part learns
    the rest) wrapped as a :class:`Retriever` with its saved config."""
    cluster_vocab = sorted({c for col in data.cluster_cols.values() for c in col
                            if c is not None}) if cfg.cluster_features else []
    cvi = {c: j + 1 for j, c in enumerate(cluster_vocab)}
    model = SASRec(len(data.item_ids), cfg.dim, cfg.layers, cfg.heads, cfg.max_len,
                   cfg.dropout, n_clusters=len(cluster_vocab))
    with torch.no_grad():
        logp = np.log(data.popularity + 1.0)
        model.item_bias[1:] = torch.as_tensor(logp - logp.mean(), dtype=torch.float32)
    if cluster_vocab:
        for j, lvl in enumerate(LEVELS):
            col = [cvi.get(c, 0) if c is not None else 0 for c in data.cluster_cols[lvl]]
            model.item_clusters[1:, j] = torch.as_tensor(col, dtype=torch.long)
    config = {"retriever": to_dict(cfg),
              "model": {"n_items": len(data.item_ids), "dim": cfg.dim, "layers": cfg.layers,
                        "heads": cfg.heads, "max_len": cfg.max_len, "dropout": cfg.dropout,
                        "n_clusters": len(cluster_vocab)}}
    return Retriever(model, data.item_ids, data.popularity, data.cluster_cols, config)


def _validate(retriever: Retriever, data: _Data, cfg: RetrieverConfig) -> float | None:
    """NDCG@k on the validation cases within their true ``eval_level`` cluster (None: none)."""
    if not data.valid or not data.cluster_of:
        return None
    retriever.refresh()
    ev = evaluate(retriever, data.valid, data.cluster_of, cfg.k, levels=(cfg.eval_level,),
                  baseline=False)
    return ev[f"level{cfg.eval_level}"]["model"][f"ndcg@{cfg.k}"]


def _final_metrics(retriever: Retriever, data: _Data, cfg: RetrieverConfig,
                   losses: list[float], valid_curve: list[float], t0: float) -> dict:
    """The curves, sizes and the held-out gate (model vs popularity within the true
    cluster); the scalar ones also go into the retriever's saved config."""
    valid_key = f"ndcg@{cfg.k}"
    metrics: dict = {"train_loss": losses, f"valid_{valid_key}": valid_curve,
                     "best_epoch": (int(np.argmax(valid_curve)) + 1) if valid_curve else len(losses),
                     "n_items": len(data.item_ids), "n_users": data.n_users,
                     "n_windows": int(len(data.windows)),
                     "train_s": round(time.perf_counter() - t0, 2)}
    if data.cases and data.cluster_of:
        ev = evaluate(retriever, data.cases, data.cluster_of, cfg.k)
        metrics["eval"] = ev
        gate = ev[f"level{cfg.eval_level}"]
        metrics[f"hit@{cfg.k}"] = gate["model"][f"hit@{cfg.k}"]
        metrics[f"ndcg@{cfg.k}"] = gate["model"][f"ndcg@{cfg.k}"]
        metrics[f"popularity_hit@{cfg.k}"] = gate["popularity"][f"hit@{cfg.k}"]
        metrics[f"popularity_ndcg@{cfg.k}"] = gate["popularity"][f"ndcg@{cfg.k}"]
    retriever.config["metrics"] = {k: v for k, v in metrics.items()
                                   if k not in ("train_loss", f"valid_{valid_key}")}
    return metrics


def train_retriever(interactions: pa.Table, item_clusters: pa.Table | None,
                    cfg: RetrieverConfig, out_dir: str | Path | None = None, *,
                    progress: bool = True) -> RetrieverResult:
    """Train the SASRec retriever, evaluate it against popularity within the true next
    cluster, and save it to ``out_dir`` (if given). Deterministic under ``cfg.seed``. The
    low level of the paper's hierarchical framework (§2): a sequence model ranks the items of
    the cluster the MLLM chose.

    Raises:
        ConfigError: a setting out of range. SerendipError: no user sequence long enough to
            train on (field ``interactions``).
    """
    cfg.check()
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = _prepare(interactions, item_clusters, cfg)
    retriever = _build(data, cfg)
    model, windows = retriever.model, data.windows
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses, valid_curve = [], []
    best, best_state, bad = -1.0, None, 0
    bar = tqdm(range(cfg.epochs), desc="train retriever", unit="epoch", disable=not progress)
    for _ in bar:
        model.train()
        order = rng.permutation(len(windows))
        total, count = 0.0, 0
        for b in range(0, len(order), cfg.batch_size):
            w = windows[order[b: b + cfg.batch_size]]
            x, y = w[:, :-1], w[:, 1:]
            logits = model.train_logits(x)
            logits[..., 0] = float("-inf")           # never predict padding
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                   ignore_index=0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            n = int((y > 0).sum())
            total, count = total + float(loss.detach()) * n, count + n
        losses.append(total / max(count, 1))
        model.eval()
        score = _validate(retriever, data, cfg)
        if score is None:
            continue
        valid_curve.append(score)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", valid=f"{score:.3f}")
        if score > best:                             # early stopping on validation NDCG
            best, bad = score, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    retriever.refresh()

    metrics = _final_metrics(retriever, data, cfg, losses, valid_curve, t0)
    if out_dir is not None:
        retriever.save(out_dir, torchscript=cfg.torchscript)
        metrics["model_version"] = retriever.model_version
    return RetrieverResult(retriever, metrics, Path(out_dir) if out_dir else None)


def retriever_stage(data_dir: str | Path, tree_dir: str | Path | None = None,
                    out_dir: str | Path | None = None, cfg: RetrieverConfig | None = None, *,
                    progress: bool = True) -> RetrieverResult:
    """Read interactions (``data_dir``) and item_clusters (``tree_dir``, default ``data_dir``),
    train, and save to ``<out_dir>/retriever`` (default ``data_dir``) — the entry point shared
    by ``serendip train-retriever`` and the KFP component (paper §2).

    Raises:
        SchemaError: a missing or malformed table. ConfigError, SerendipError: as
            :func:`train_retriever`.
    """
    from serendip.data.io import read_table

    tree_dir = tree_dir or data_dir
    items = read_table(data_dir, "items", columns=["item_id"])
    interactions = read_table(data_dir, "interactions", refs={"items": items})
    item_clusters = read_table(tree_dir, "item_clusters", refs={"items": items})
    return train_retriever(interactions, item_clusters, cfg or RetrieverConfig(),
                           Path(out_dir or data_dir) / "retriever", progress=progress)
