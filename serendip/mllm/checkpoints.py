"""Resumable fine-tuning checkpoints under ``.<out>.work/checkpoints/step-NNNNNNN``.

Checkpoints hold only what trains (safetensors) + the optimizer state (safetensors + JSON, no
pickle) + the loop state; batches come from a seeded permutation per epoch, so a resumed run
replays the same batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from serendip.errors import ConfigError
from serendip.mllm.config import FinetuneConfig


def save_dir(obj, path: Path) -> None:
    """``obj.save_pretrained`` into ``path`` via a temporary directory (never half-written)."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    obj.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters()
            if p.requires_grad}


def save_checkpoint(work: Path, step: int, model, opt, loop_state: dict,
                    keep: int) -> Path:
    """Write ``work/checkpoints/step-NNNNNNN`` (trainable weights, optimizer state, loop state)
    under a temporary name, then rename; keep the ``keep`` newest. Returns its path."""
    from safetensors.torch import save_file

    ckpt_root = work / "checkpoints"
    final = ckpt_root / f"step-{step:07d}"
    tmp = ckpt_root / f".step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_trainable_state(model), str(tmp / "trainable.safetensors"))
    tensors, scalars = {}, {}
    for idx, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = v.contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    groups = opt.state_dict()["param_groups"]
    (tmp / "optimizer.json").write_text(json.dumps({"param_groups": groups, "scalars": scalars}))
    (tmp / "state.json").write_text(json.dumps(loop_state))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(ckpt_root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(work: Path) -> Path | None:
    """The newest complete checkpoint under ``work/checkpoints``, or None."""
    done = sorted(p for p in (work / "checkpoints").glob("step-*")
                  if (p / "state.json").exists())
    return done[-1] if done else None


def load_checkpoint(ckpt: Path, model, opt) -> dict:
    """Load ``ckpt`` into ``model``'s trainable weights and ``opt``; returns the loop state.

    Raises:
        ConfigError: the checkpoint holds weights this model does not have (field ``resume``)."""
    from safetensors.torch import load_file

    state = load_file(str(ckpt / "trainable.safetensors"))
    params = dict(model.named_parameters())
    unknown = set(state) - set(params)
    if unknown:
        raise ConfigError(f"checkpoint {ckpt.name} does not fit this model "
                          f"(e.g. {sorted(unknown)[0]})", field="resume",
                          fix="use a new run directory, or the same config as before")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    meta = json.loads((ckpt / "optimizer.json").read_text())
    opt_state: dict = {}
    for key, t in tensors.items():
        idx, k = key.split(".", 1)
        opt_state.setdefault(int(idx), {})[k] = t
    for key, v in meta["scalars"].items():
        idx, k = key.split(".", 1)
        opt_state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    return json.loads((ckpt / "state.json").read_text())


SCORING_ONLY = ("prior_weight",)   # settings that change how answers rank, not training


def config_key(cfg: FinetuneConfig) -> dict:
    """Settings that must not change across a resume (cadence, length and the scoring-only
    settings may)."""
    d = asdict(cfg)
    for k in ("steps", "eval_every", "eval_max_examples", "eval_batch_size", "save_every",
              "keep_checkpoints", "precision", "time_budget_s", *SCORING_ONLY):
        d.pop(k)
    return json.loads(json.dumps(d, default=str))


def resume_state(work: Path, cfg: FinetuneConfig, model, opt, resume: bool
                 ) -> tuple[int, list[dict]]:
    """(step, history) of the latest checkpoint under ``work`` (loaded into model and
    optimizer), or (0, []) for a fresh run."""
    ckpt = latest_checkpoint(work) if resume else None
    if ckpt is None:
        return 0, []
    state = load_checkpoint(ckpt, model, opt)
    if state["config"] != config_key(cfg):
        raise ConfigError(f"{work} holds a run with another config", field="resume",
                          fix="use a new run name or resume=false (--no-resume)")
    return state["step"], state["history"]
