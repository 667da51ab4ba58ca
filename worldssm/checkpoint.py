"""Checkpoints on disk: safetensors weights and optimizer tensors plus a JSON sidecar; atomic;
no pickle. (Building a model from one is `worldssm.model.load_model`.)

Layout of a run directory:

    RUN/checkpoints/step-00001000/model.safetensors      weights
    RUN/checkpoints/step-00001000/optimizer.safetensors  AdamW moments and the torch RNG state
    RUN/checkpoints/step-00001000/checkpoint.json        configs, step, sampler state, data spec
    RUN/checkpoints/latest                               name of the newest complete checkpoint

A checkpoint directory is written under a temporary name and renamed when complete; `latest` is
replaced atomically afterwards, so a crash at any point leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from worldssm.atomic import atomic_write_text
from worldssm.errors import CheckpointError

FORMAT_VERSION = 1
KEEP = 2


def to_jsonable(obj):
    """Configs and sidecars to plain JSON: numpy arrays become {"__ndarray__": list, "dtype": str}."""
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


def from_jsonable(obj):
    """Inverse of `to_jsonable`."""
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        return {k: from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    return obj

def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able scalars."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{idx}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_state_dict(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, val in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    for name, val in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir, step: int, model: torch.nn.Module, optimizer, sidecar: dict) -> Path:
    """Write a complete checkpoint for `step` and point `latest` at it; keep the newest KEEP.

    Returns:
        The checkpoint directory.
    """
    from safetensors.torch import save_file

    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    final = root / name
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        meta = {}
        if optimizer is not None:
            tensors, meta = optimizer_tensors(optimizer)
            tensors["__rng__.torch"] = torch.get_rng_state()
            save_file(tensors, str(tmp / "optimizer.safetensors"))
        doc = {"format_version": FORMAT_VERSION, "step": int(step), "optimizer": meta, **sidecar}
        (tmp / "checkpoint.json").write_text(json.dumps(to_jsonable(doc), indent=1))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / "latest", name + "\n")
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in done[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path) -> Path:
    """A run directory, its checkpoints/ folder, or one checkpoint directory -> the checkpoint dir."""
    path = Path(path)
    if (path / "checkpoint.json").is_file():
        return path
    for root in (path / "checkpoints", path):
        latest = root / "latest"
        if latest.is_file():
            ckpt = root / latest.read_text().strip()
            if not (ckpt / "checkpoint.json").is_file():
                raise CheckpointError(f"{latest} names {ckpt.name}, which is missing or incomplete")
            return ckpt
    raise CheckpointError(f"no checkpoint found at {path} (expected a run directory with checkpoints/latest)")


def load_checkpoint(path, with_optimizer: bool = False):
    """Read a checkpoint without executing any code.

    Returns:
        (sidecar dict, model tensors, optimizer tensors or None, checkpoint dir).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ckpt = resolve_checkpoint(path)
    try:
        sidecar = from_jsonable(json.loads((ckpt / "checkpoint.json").read_text()))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{ckpt / 'checkpoint.json'}: unreadable sidecar ({exc})") from exc
    if sidecar.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{ckpt / 'checkpoint.json'}: format_version {sidecar.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    try:
        weights = load_file(str(ckpt / "model.safetensors"))
        optim = load_file(str(ckpt / "optimizer.safetensors")) if with_optimizer else None
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"{ckpt}: cannot read tensors ({exc})") from exc
    return sidecar, weights, optim, ckpt
