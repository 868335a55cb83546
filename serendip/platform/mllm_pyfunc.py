"""MLflow "model from code" for ``serendip-mllm``: a pyfunc wrapping :class:`ClusterPredictor`.

Logged as code (this file) plus the saved model directory as an artifact, so nothing is
pickled: the weights stay safetensors and the wrapper is this source file. Input: a DataFrame
with ``title``, ``context_description`` and ``images`` (list of media references); output: one
row per (input, rank) with ``cluster_id``, ``description`` and ``score``. Params: ``k`` and
``constrained``.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class SerendipMLLM(PythonModel):
    def load_context(self, context) -> None:
        from serendip.mllm.inference import ClusterPredictor

        self.model_dir = context.artifacts["model_dir"]
        self.predictor = ClusterPredictor.load(self.model_dir)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None
                ) -> pd.DataFrame:
        params = params or {}
        k = int(params.get("k", 1))
        constrained = bool(params.get("constrained", True))
        records = []
        for row in model_input.to_dict("records"):
            images = row.get("images")
            records.append({"title": row.get("title") or "",
                            "context_description": row.get("context_description") or "",
                            "images": list(images) if images is not None else []})
        preds = self.predictor.predict(records, k=k, constrained=constrained)
        rows = [{"input_index": i, "rank": r, "cluster_id": p.cluster_id or "",
                 "description": p.description, "score": p.score}
                for i, ps in enumerate(preds) for r, p in enumerate(ps)]
        return pd.DataFrame(rows, columns=["input_index", "rank", "cluster_id", "description",
                                           "score"])


mlflow.models.set_model(SerendipMLLM())
