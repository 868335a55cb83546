"""The v2 tensor contracts of the served models (KServe Open Inference Protocol / Triton) and
the checks Triton applies to a request, for the KServe servers (which do not check requests
against a model config).

Every input and output has a leading batch dimension, as Triton requires with
``max_batch_size > 0``:

* ``mllm``      TITLE, CONTEXT_DESCRIPTION?, THUMBNAIL?, FRAMES?, K?, CANDIDATES? →
                CLUSTER_IDS, DESCRIPTIONS, SCORES, MODEL_VERSION (CANDIDATES: the only
                cluster ids the answer may name — the context's serendipitous candidates,
                ranked by likelihood; the recommend flow always sends them when it knows them;
                CONTEXT_DESCRIPTION, the context's own level-l cluster description, also
                selects the model's transition prior, :mod:`serendip.transitions` — without
                it the answer is the model's alone)
* ``retriever`` HISTORY?, CLUSTER_ID, K? → ITEM_IDS, SCORES (an empty CLUSTER_ID: the whole
                catalogue, the unrestricted exploitation retriever)
* ``recommend`` ITEM_ID, HISTORY?, K?, SHARE? → ITEM_IDS, SCORES, CLUSTER_ID, DESCRIPTION,
                SOURCE, ITEM_SOURCES
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from serendip.errors import SerendipError

MAX_K_MLLM = 10            # beams of constrained decoding; more is slow and meaningless
MAX_K_ITEMS = 200          # items per retriever / recommend answer
MAX_FRAMES = 32            # images per row
MAX_HISTORY = 1000         # history ids per row (the retriever attends to the last max_len)
MAX_ID_BYTES = 256         # one item or cluster id
MAX_TEXT_BYTES = 4096      # a title or description


@dataclass(frozen=True)
class TensorSpec:
    """One v2 tensor: name, datatype and dims *without* the batch dimension (-1: variable)."""

    name: str
    datatype: str                  # BYTES | INT32 | FP32
    dims: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)


MLLM = ModelSpec(
    "mllm",
    inputs=(TensorSpec("TITLE", "BYTES", (1,)),
            TensorSpec("CONTEXT_DESCRIPTION", "BYTES", (1,), optional=True),
            TensorSpec("THUMBNAIL", "BYTES", (1,), optional=True),
            TensorSpec("FRAMES", "BYTES", (-1,), optional=True),
            TensorSpec("K", "INT32", (1,), optional=True),
            TensorSpec("CANDIDATES", "BYTES", (-1,), optional=True)),
    outputs=(TensorSpec("CLUSTER_IDS", "BYTES", (-1,)),
             TensorSpec("DESCRIPTIONS", "BYTES", (-1,)),
             TensorSpec("SCORES", "FP32", (-1,)),
             TensorSpec("MODEL_VERSION", "BYTES", (1,))),
    max_batch_size=8)

RETRIEVER = ModelSpec(
    "retriever",
    inputs=(TensorSpec("HISTORY", "BYTES", (-1,), optional=True),
            TensorSpec("CLUSTER_ID", "BYTES", (1,)),
            TensorSpec("K", "INT32", (1,), optional=True)),
    outputs=(TensorSpec("ITEM_IDS", "BYTES", (-1,)),
             TensorSpec("SCORES", "FP32", (-1,))),
    max_batch_size=64)

RECOMMEND = ModelSpec(
    "recommend",
    inputs=(TensorSpec("ITEM_ID", "BYTES", (1,)),
            TensorSpec("HISTORY", "BYTES", (-1,), optional=True),
            TensorSpec("K", "INT32", (1,), optional=True),
            TensorSpec("SHARE", "FP32", (1,), optional=True)),
    outputs=(TensorSpec("ITEM_IDS", "BYTES", (-1,)),
             TensorSpec("SCORES", "FP32", (-1,)),
             TensorSpec("CLUSTER_ID", "BYTES", (1,)),
             TensorSpec("DESCRIPTION", "BYTES", (1,)),
             TensorSpec("SOURCE", "BYTES", (1,)),
             TensorSpec("ITEM_SOURCES", "BYTES", (-1,))),
    max_batch_size=64)

SPECS: dict[str, ModelSpec] = {s.name: s for s in (MLLM, RETRIEVER, RECOMMEND)}
NUMPY_DTYPES = {"BYTES": np.object_, "INT32": np.int32, "FP32": np.float32}


def check_tensors(spec: ModelSpec, tensors: Mapping[str, tuple[str, Sequence[int]]]) -> int:
    """Check names, datatypes and shapes as Triton does; return the batch size.

    ``tensors`` maps input name → (datatype, shape). Used by the KServe servers, which (unlike
    Triton) do not check requests against a model config.
    """
    batch = None
    for name, (datatype, shape) in tensors.items():
        t = spec.input(name)
        if t is None:
            raise SerendipError(f"unexpected input for model '{spec.name}'", field=name,
                                fix="send only " + ", ".join(x.name for x in spec.inputs))
        if datatype != t.datatype:
            raise SerendipError(f"data-type is '{datatype}', but model '{spec.name}' expects "
                                f"'{t.datatype}'", field=name, fix=f"send {name} as {t.datatype}")
        shape = [int(s) for s in shape]
        want = [-1, *t.dims]
        if len(shape) != len(want) or any(w != -1 and s != w for s, w in zip(shape, want)):
            raise SerendipError(f"unexpected shape {shape}, expected {want} (a leading batch "
                                "dimension, then the tensor)", field=name,
                                fix=f"reshape {name} to {[1, *t.dims]} for one request")
        if not 1 <= shape[0] <= spec.max_batch_size:
            raise SerendipError(f"batch size {shape[0]} outside [1, {spec.max_batch_size}]",
                                field=name, fix=f"send at most {spec.max_batch_size} rows")
        if batch is not None and shape[0] != batch:
            raise SerendipError(f"batch size {shape[0]} differs from the other inputs ({batch})",
                                field=name, fix="give every input the same number of rows")
        batch = shape[0]
    for t in spec.inputs:
        if not t.optional and t.name not in tensors:
            raise SerendipError(f"required input is missing for model '{spec.name}'",
                                field=t.name, fix=f"send {t.name} ({t.datatype} {[1, *t.dims]})")
    return int(batch or 0)
