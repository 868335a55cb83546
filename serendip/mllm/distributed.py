"""Device placement and data-parallel fine-tuning across the GPUs of one node.

``torchrun`` (``torch.distributed.run``, part of torch) starts one process per GPU; each
process trains a :class:`~torch.nn.parallel.DistributedDataParallel` replica on its slice of
every global batch, so the optimisation (global batch size, learning rate, seeded batch order)
is the same as one process with the whole batch. Rank 0 alone evaluates, checkpoints, saves
and talks to MLflow; the others wait at a barrier. torchrun rather than ``accelerate launch``:
it ships with torch (no extra dependency or config file) and the loop needs only DDP, not
accelerate's mixed-precision/FSDP wrappers. The same code runs on CPU with the ``gloo``
backend, which is how the tests exercise it without a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from serendip.errors import ConfigError, SerendipError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Context:
    """Where this process trains: its rank among ``world`` processes and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, indices: list[int]) -> list[int]:
        """This rank's part of a global batch (strided, so every rank gets ~len/world)."""
        return indices[self.rank::self.world]

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def check_device(name: str) -> None:
    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r}", field="device",
                          fix=f"use one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible", field="device",
                          fix="use device=auto (CPU when there is no GPU) or run on a GPU node")


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the (current) GPU when one is visible, else the CPU."""
    check_device(name)
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def resolve_nproc(nproc: int, device: str) -> int:
    """Processes to train with: ``nproc`` when set, else one per visible GPU (1 on CPU)."""
    if nproc < 0:
        raise ConfigError(f"nproc={nproc}", field="nproc",
                          fix="use 0 (one process per GPU) or a positive count")
    if nproc:
        return nproc
    if device == "cpu" or not torch.cuda.is_available():
        return 1
    return max(1, torch.cuda.device_count())


def in_launched_worker() -> bool:
    """True inside a process started by torchrun (it sets these variables)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: str = "auto") -> Context:
    """This process's :class:`Context`; joins the process group when started by torchrun."""
    check_device(device)
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if not in_launched_worker() or int(os.environ["WORLD_SIZE"]) == 1:
        return Context(device=torch.device("cuda" if use_cuda else "cpu"))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
    if use_cuda:
        torch.cuda.set_device(local)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    return Context(rank, world, local, dev)


def teardown(ctx: Context) -> None:
    if ctx.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def wrap(model: torch.nn.Module, ctx: Context, find_unused: bool = True) -> torch.nn.Module:
    """The module the training step calls: ``model`` itself, or its DDP wrapper."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.local_rank] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ---------------------------------------------------------------------------- launcher
def launch(entry: str, spec: dict, nproc: int, timeout: float | None = None) -> dict:
    """Run ``entry`` (``module:function`` taking the spec dict and returning a JSON-able dict)
    in ``nproc`` torchrun workers on this node; returns rank 0's result.

    The spec travels as a JSON file so that the workers rebuild every config from plain data
    (no pickling of live objects across processes)."""
    with tempfile.TemporaryDirectory(prefix="serendip-ddp-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps({"entry": entry, "spec": spec,
                                         "result": str(result_path)}, default=str))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "serendip.mllm.distributed", str(spec_path)]
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        proc = subprocess.run(cmd, env=env, timeout=timeout)
        if proc.returncode != 0 or not result_path.exists():
            raise SerendipError(f"distributed fine-tuning with {nproc} processes failed "
                                f"(exit code {proc.returncode})", field="nproc",
                                fix="read the worker logs above; nproc=1 trains in one process")
        return json.loads(result_path.read_text())


def _worker(spec_file: str) -> int:
    import importlib

    job = json.loads(Path(spec_file).read_text())
    module, func = job["entry"].split(":")
    result = getattr(importlib.import_module(module), func)(job["spec"])
    if int(os.environ.get("RANK", "0")) == 0:
        tmp = Path(job["result"] + ".tmp")
        tmp.write_text(json.dumps(result, default=str))
        os.replace(tmp, job["result"])
    return 0


if __name__ == "__main__":
    raise SystemExit(_worker(sys.argv[1]))
