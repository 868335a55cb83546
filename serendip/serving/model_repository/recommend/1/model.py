"""Triton Python backend for ``recommend`` (BLS): ``serendip.serving.recommend.RecommendFlow`` with a
snapshot lookup and async BLS calls to ``mllm`` and ``retriever`` (see config.pbtxt)."""

import asyncio
import json
import os
from pathlib import Path

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from serendip.platform.serving.lookup import ClusterLookup, ItemCatalog
        from serendip.serving.cluster_choice import ClusterCache
        from serendip.serving.contracts import MLLM, RETRIEVER
        from serendip.serving.recommend import RecommendFlow

        weights = Path(args["model_repository"]) / args["model_version"] / "weights"
        meta = json.loads((weights / "snapshot.json").read_text())
        self.outputs = {"mllm": [t.name for t in MLLM.outputs],
                        "retriever": [t.name for t in RETRIEVER.outputs]}
        # the online rows the KServe transformer reads, read directly (Feast cannot live in
        # this numpy<2 venv): Redis when SERENDIP_FEAST_ONLINE_STORE=redis, else the work
        # directory's sqlite online store; the exported snapshot only when `serve` was told
        # --features table (SERENDIP_SERVE_FEATURES) or there is no store
        features = os.environ.get("SERENDIP_SERVE_FEATURES", "auto")
        redis = sqlite = None
        if features != "table":
            if os.environ.get("SERENDIP_FEAST_ONLINE_STORE", "").strip().lower() == "redis":
                redis = os.environ.get("FEAST_REDIS_CONNECTION_STRING")
            elif meta.get("media_base"):
                db = Path(meta["media_base"]) / "feature_repo" / "data" / "online_store.db"
                sqlite = str(db) if db.exists() else None
        lookup = ClusterLookup(weights, "table", redis_connection=redis, sqlite_online=sqlite)
        catalog = ItemCatalog(weights, base_dir=meta.get("media_base"))
        self.flow = RecommendFlow(lookup, catalog, self._predict, self._retrieve,
                                  ClusterCache(ttl_s=float(meta.get("cache_ttl_s", 300))))
        pb_utils.Logger.log_info(
            f"recommend: {len(catalog)} items, clusters from "
            + ("Feast's Redis online store" if redis else
               f"Feast's sqlite online store {sqlite}" if sqlite else
               f"a snapshot of {meta.get('scored_items')} scored items"))

    async def _bls(self, model, arrays):
        from serendip.serving.errors import remote_error

        req = pb_utils.InferenceRequest(
            model_name=model, requested_output_names=self.outputs[model],
            inputs=[pb_utils.Tensor(n, a) for n, a in arrays.items()])
        resp = await req.async_exec()
        if resp.has_error():
            raise remote_error(model, resp.error().message())
        return {n: pb_utils.get_output_tensor_by_name(resp, n).as_numpy()
                for n in self.outputs[model]}

    async def _predict(self, info):
        from serendip.serving.infer_requests import first_row_choice, mllm_request

        return first_row_choice(await self._bls("mllm", mllm_request(info)))

    async def _retrieve(self, history, cluster_id, k):
        from serendip.serving.infer_requests import first_row_items, retriever_request

        return first_row_items(await self._bls("retriever",
                                               retriever_request(history, cluster_id, k)))

    async def execute(self, requests):
        from serendip.errors import SerendipError
        from serendip.serving.contracts import RECOMMEND
        from serendip.serving.errors import ServerFault

        async def one(r):
            arrays = {}
            for t in RECOMMEND.inputs:
                x = pb_utils.get_input_tensor_by_name(r, t.name)
                if x is not None:
                    arrays[t.name] = x.as_numpy()
            try:
                out = await self.flow.infer(arrays)
            except ServerFault as e:          # the server's own data or models: INTERNAL
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e)))
            except SerendipError as e:
                return pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG))
            except Exception as e:  # noqa: BLE001 — INTERNAL for this request only
                return pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"{type(e).__name__}: {e}"))
            return pb_utils.InferenceResponse([pb_utils.Tensor(n, a) for n, a in out.items()])

        return list(await asyncio.gather(*(one(r) for r in requests)))
