"""Triton Python backend glue: the ``config.pbtxt`` tensor blocks of a contract, and
``TritonPythonModel.execute`` / ``initialize`` helpers for a handler. Triton's
``triton_python_backend_utils`` is passed in, so this module imports no Triton SDK and stays
testable outside Triton."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from serendip.errors import SerendipError
from serendip.serving.contracts import ModelSpec, TensorSpec
from serendip.serving.errors import ServerFault

_TRITON_TYPES = {"BYTES": "TYPE_STRING", "INT32": "TYPE_INT32", "FP32": "TYPE_FP32"}


def config_pbtxt_io(spec: ModelSpec) -> str:
    """The ``input``/``output`` blocks of a Triton ``config.pbtxt`` for ``spec`` (a test keeps
    the committed configs equal to the contracts above)."""
    def block(kind: str, tensors: Sequence[TensorSpec]) -> str:
        rows = []
        for t in tensors:
            opt = " optional: true" if t.optional else ""
            if kind == "input" and -1 in t.dims:   # python backend takes requests one by one
                opt += " allow_ragged_batch: true"
            dims = ", ".join(str(d) for d in t.dims)
            rows.append(f'  {{ name: "{t.name}" data_type: {_TRITON_TYPES[t.datatype]} '
                        f"dims: [ {dims} ]{opt} }}")
        return f"{kind} [\n" + ",\n".join(rows) + "\n]"
    return block("input", spec.inputs) + "\n" + block("output", spec.outputs) + "\n"



def triton_execute(handler, requests: Sequence, pb_utils) -> list:
    """``TritonPythonModel.execute`` for a handler: tensors in, one response per request.

    ``pb_utils`` is Triton's ``triton_python_backend_utils`` module, passed in so this module
    stays importable (and testable) outside Triton. A :class:`SerendipError` becomes an
    INVALID_ARG response (HTTP 400 / gRPC INVALID_ARGUMENT) for that request only; an
    unexpected exception fails the batch with INTERNAL, and the model keeps serving.
    """
    arrays = []
    for r in requests:
        a = {}
        for t in handler.spec.inputs:
            x = pb_utils.get_input_tensor_by_name(r, t.name)
            if x is not None:
                a[t.name] = x.as_numpy()
        arrays.append(a)
    try:
        results = handler.infer(arrays)
    except ServerFault as e:
        err = pb_utils.TritonError(str(e))
        return [pb_utils.InferenceResponse(error=err) for _ in requests]
    except SerendipError as e:
        results = [e] * len(requests)
    except Exception as e:  # noqa: BLE001 — answered as INTERNAL, the server lives on
        err = pb_utils.TritonError(f"{type(e).__name__}: {e}")
        return [pb_utils.InferenceResponse(error=err) for _ in requests]
    out = []
    for res in results:
        if isinstance(res, ServerFault):
            out.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(res))))
        elif isinstance(res, SerendipError):
            out.append(pb_utils.InferenceResponse(
                error=pb_utils.TritonError(str(res), pb_utils.TritonError.INVALID_ARG)))
        else:
            out.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, np.ascontiguousarray(a)) for name, a in res.items()]))
    return out


def model_parameters(model_config: Mapping) -> dict[str, str]:
    """``parameters`` of a Triton model config (as passed to ``initialize``) → plain dict."""
    return {k: v.get("string_value", "") for k, v in (model_config.get("parameters") or {}).items()}
