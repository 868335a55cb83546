"""MLflow "model from code" for ``serendip-retriever``: a pyfunc wrapping :class:`Retriever`.

Logged as code (this file) plus the saved retriever directory (safetensors weights, index
parquet, TorchScript export, JSON config) as an artifact: nothing is pickled. Input: a DataFrame
with ``history`` (list of item ids, oldest first) and ``cluster_id`` (path id, or empty for the
whole catalogue); output: one row per (input, rank) with ``item_id`` and ``score``. Param: ``k``.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class SerendipRetriever(PythonModel):
    def load_context(self, context) -> None:
        from serendip.retriever import Retriever

        self.model_dir = context.artifacts["retriever_dir"]
        self.retriever = Retriever.load(self.model_dir)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None
                ) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        hist, cids = [], []
        for row in model_input.to_dict("records"):
            h = row.get("history")
            hist.append([str(x) for x in h] if h is not None else [])
            cids.append(str(row.get("cluster_id") or "") or None)
        found = self.retriever.retrieve_batch(hist, cids, k)
        rows = [{"input_index": i, "rank": r, "item_id": item, "score": score}
                for i, items in enumerate(found) for r, (item, score) in enumerate(items)]
        return pd.DataFrame(rows, columns=["input_index", "rank", "item_id", "score"])


mlflow.models.set_model(SerendipRetriever())
