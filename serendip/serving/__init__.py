"""Serving logic shared by every server, free of platform SDKs: Triton's Python backend (a
numpy<2 venv), the KServe fallback and the KServe transformer (:mod:`serendip.platform.serving`)
all call it, so they answer identically.

Modules (KServe v2 / Triton terms):

* :mod:`~serendip.serving.contracts`       the v2 tensor contracts (``MLLM``, ``RETRIEVER``,
                                           ``RECOMMEND``), input limits, Triton's request checks
* :mod:`~serendip.serving.codec`           v2 tensors ↔ Python values (checked decoding, padded
                                           answers)
* :mod:`~serendip.serving.handlers`        ``MllmHandler``, ``RetrieverHandler``: a batch of
                                           requests in, one answer or error per request out
* :mod:`~serendip.serving.batching`        ``MicroBatcher``: Triton-style dynamic batching for
                                           the KServe fallback
* :mod:`~serendip.serving.cluster_choice`  ``ClusterChoice``, ``ClusterCache``
* :mod:`~serendip.serving.infer_requests`  the requests the recommend flow sends to ``mllm`` /
                                           ``retriever`` and the rows it reads back
* :mod:`~serendip.serving.recommend`       ``RecommendFlow``: the blended slate (paper §4)
* :mod:`~serendip.serving.triton_backend`  Triton Python backend glue (``triton_execute``)
* :mod:`~serendip.serving.repository`      the Triton model repository writer (``serendip
                                           export``); its templates ship as package data in
                                           ``serendip/serving/model_repository/``
* :mod:`~serendip.serving.errors`          ``ServerFault`` (HTTP 500) vs the client's mistakes

Errors are :class:`~serendip.errors.SerendipError` whose ``field`` is the input name; servers
turn them into HTTP 400 / gRPC INVALID_ARGUMENT and keep serving — only for the client's own
mistakes. A fault of the server's own data, stores or models is a
:class:`~serendip.serving.errors.ServerFault` (HTTP 500, gRPC INTERNAL / Triton INTERNAL).
"""
