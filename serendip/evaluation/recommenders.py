"""The recommenders compared in the online simulation, built from a work directory.

All of them share one retriever and one catalogue, so differences come from *which cluster*
(or which neighbourhood) each one chooses — the paper's point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from serendip.errors import SerendipError
from serendip.evaluation.online_sim import Recommender, ThompsonClusterBandit
from serendip.evaluation.truth import GroundTruth


def load_embeddings(workdir: Path) -> dict[str, np.ndarray]:
    path = workdir / "embeddings.parquet"
    if not path.exists():
        raise SerendipError(f"{path} is missing", field="embeddings",
                            fix="run `serendip cluster` first (it caches item embeddings)")
    t = pq.read_table(path)
    mat = np.asarray(t.column("embedding").to_pylist(), dtype=np.float32)
    mat /= np.linalg.norm(mat, axis=1, keepdims=True) + 1e-12
    return dict(zip(t.column("item_id").to_pylist(), mat))


class ContentNeighbours:
    """Exact inner-product neighbours (faiss) of the context item: the exploration baseline."""

    def __init__(self, emb: Mapping[str, np.ndarray]):
        import faiss

        self.ids = list(emb)
        self.pos = {i: k for k, i in enumerate(self.ids)}
        mat = np.stack([emb[i] for i in self.ids]).astype(np.float32)
        self.index = faiss.IndexFlatIP(mat.shape[1])
        self.index.add(mat)
        self.mat = mat

    def __call__(self, user: str, history: list[str], context: str, k: int) -> list[str]:
        if context not in self.pos:
            return []
        seen = set(history) | {context}
        _, idx = self.index.search(self.mat[self.pos[context]][None], k + len(seen) + 1)
        return [self.ids[j] for j in idx[0] if j >= 0 and self.ids[j] not in seen][:k]


def serendipitous_clusters(workdir: Path, items: list[str], predictor_dir: Path | None,
                           index=None) -> dict[str, str]:
    """Item → the MLLM's top serendipitous cluster: batch-scored rows first, then the model for
    items that scoring did not cover (the long tail outside the impression-coverage target).

    With ``index`` (a :class:`serendip.candidates.CandidateIndex`) only candidate clusters
    count: the first candidate among an item's scored answers, and the model ranks exactly the
    item's candidates — never the item's own cluster (issue 15)."""
    from serendip.data.io import has_table, read_table

    out: dict[str, str] = {}
    if has_table(workdir, "item_serendipity"):
        t = read_table(workdir, "item_serendipity", columns=["item_id", "cluster_ids"]).to_pylist()
        rows = [r for r in t if r["cluster_ids"]]
        if index is None:
            out = {r["item_id"]: r["cluster_ids"][0] for r in rows}
        else:
            from serendip.candidates import restrict_to_candidates

            kept, _ = restrict_to_candidates([r["cluster_ids"] for r in rows],
                                             [r["item_id"] for r in rows], index)
            out = {r["item_id"]: k[0] for r, k in zip(rows, kept) if k}
    missing = [i for i in items if i not in out]
    if index is not None:       # an item without candidates gets no serendipitous cluster
        missing = [i for i, c in zip(missing, index.candidates(missing)) if c]
    if missing and predictor_dir is not None:
        from serendip.mllm.models import load_predictor

        predictor = load_predictor(predictor_dir, workdir)  # media paths: the work dir
        rows = read_table(workdir, "items").to_pandas().set_index("item_id").loc[missing]
        ic = read_table(workdir, "item_clusters").to_pandas().set_index("item_id")
        desc = read_table(workdir, "clusters").to_pandas().set_index("cluster_id").description
        from serendip.prompts import select_images

        inputs = [{"title": r.title,
                   "context_description": desc[ic.loc[i, f"c{predictor.level}"]],
                   "images": select_images(predictor.prompt_config, r.thumbnail,
                                           None if r.frames is None else list(r.frames))}
                  for i, r in rows.iterrows()]
        preds = (predictor.predict(inputs, k=1, constrained=True)
                 if index is None else      # rank exactly each item's candidates
                 predictor.predict(inputs, k=1, constrained=True,
                                   candidates=index.candidates(missing)))
        out.update({i: p[0].cluster_id for i, p in zip(missing, preds) if p})
    return out


def make_recommender_factory(workdir: str | Path, retriever, truth: GroundTruth,
                             cluster_at: Mapping[str, tuple[str, ...]],
                             emb: Mapping[str, np.ndarray], serendip_cluster: Mapping[str, str],
                             level: int, delta: int, serendipitous_share: float = 0.2
                             ) -> Callable[[int], dict[str, Recommender]]:
    neighbours = ContentNeighbours(emb)

    def exploitation(user, history, context, k):
        return [i for i, _ in retriever.retrieve(history + [context], None, k)]

    def ours(user, history, context, k):
        cluster = serendip_cluster.get(context)
        if cluster is None:
            return []
        return [i for i, _ in retriever.retrieve(history + [context], cluster, k)]

    def factory(seed: int) -> dict[str, Recommender]:
        bandit = ThompsonClusterBandit(cluster_at, level, delta, seed)

        def bandit_rec(user, history, context, k):
            arm = bandit.choose(context)
            items = [i for i, _ in retriever.retrieve(history + [context], arm, k)]
            if items:  # simulated feedback from the user who saw the list
                bandit.update(context, arm, truth.expected([user] * len(items),
                                                           [context] * len(items), items))
            return items

        def blend(user, history, context, k):
            """The paper's live setting: ours added to exploitation (serendip.blend)."""
            from serendip.blend import BlendConfig, blend_slate, slate_ids

            return slate_ids(blend_slate(exploitation(user, history, context, k),
                                         ours(user, history, context, k),
                                         BlendConfig(k, serendipitous_share)))

        return {"exploitation": exploitation, "exploration": neighbours,
                "bandit": bandit_rec, "serendip": ours, "blend": blend}

    return factory
