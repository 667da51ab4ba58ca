"""Where a world model comes from: a trained checkpoint, or an untrained preset over two spaces.

`load_model(path)` builds a trained model from a checkpoint (`worldssm.checkpoint` reads and
checks the files; nothing is executed; the config is checked against the weights before the
model is built). `ModelSource` names either kind of model as plain data, so a
process that has only the name (an EngineActor, a benchmark's subprocess) can build it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worldssm.checkpoint import MODEL_FILE, SIDECAR_FILE, load_checkpoint
from worldssm.errors import CheckpointError
from worldssm.model.config import WorldModelConfig
from worldssm.model.world_model import WorldModel
from worldssm.spaces import check_space_dict


def load_model(path, device: str | torch.device = "cpu", kernels: str | None = None):
    """Load a trained world model for inference.

    Args:
        path: a run directory or a checkpoint directory.
        device: where to put the model.
        kernels: override the backbone's kernel choice ("auto", "reference", "triton").

    Returns:
        (WorldModel in eval mode, sidecar dict with "model_config", "data", "step", ...).

    Raises:
        CheckpointError: missing, damaged, or weights that do not match the config (checked
            before the model is built, so a damaged config allocates nothing).
    """
    sidecar, weights, _, ckpt = load_checkpoint(path)
    cfg = model_config_of(sidecar, ckpt)
    if kernels is not None:
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, kernels=kernels))
    data = sidecar["data"]
    model = build_checked_model(cfg, data["observation_space"], data["action_space"], weights, ckpt)
    return model.to(device).eval(), sidecar


def model_config_of(sidecar: dict, ckpt) -> WorldModelConfig:
    """The sidecar's model_config as a WorldModelConfig; CheckpointError names a bad field."""
    try:
        return WorldModelConfig.from_dict(sidecar["model_config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{Path(ckpt) / SIDECAR_FILE}: field model_config: {exc}") from None


def build_checked_model(cfg: WorldModelConfig, obs_space: dict, action_space: dict,
                        weights: dict[str, torch.Tensor], ckpt):
    """A WorldModel (on the CPU) holding `weights`, after checking that `cfg` and the spaces
    describe exactly those tensors, so nothing large is allocated for a config that does not.

    The check runs on the meta device (shapes without storage) after two bounds that keep even
    the meta model small: no layer count exceeds the number of tensors (every layer holds at
    least one) and no size exceeds the number of weights.

    Raises:
        CheckpointError: naming the config field or the tensor that does not match.
    """
    sidecar, where = Path(ckpt) / SIDECAR_FILE, Path(ckpt) / MODEL_FILE
    check_config_sizes(cfg, weights, sidecar)
    try:
        with torch.device("meta"):
            skeleton = WorldModel(cfg, obs_space, action_space)
    except (ValueError, RuntimeError, OverflowError, TypeError) as exc:
        raise CheckpointError(f"{sidecar}: fields model_config and data do not describe a model ({exc})") from None
    expected = skeleton.state_dict()
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing:
        raise CheckpointError(f"{where}: tensor {missing[0]} is missing ({len(missing)} in all): the file does not "
                              "match model_config")
    if unexpected:
        raise CheckpointError(f"{where}: tensor {unexpected[0][:100]!r} is not part of the model that model_config "
                              f"describes ({len(unexpected)} such tensors)")
    for name, want in expected.items():
        got = weights[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise CheckpointError(f"{where}: tensor {name} is {got.dtype} {list(got.shape)}, model_config and the "
                                  f"spaces make it {want.dtype} {list(want.shape)}")
    model = WorldModel(cfg, obs_space, action_space)
    model.load_state_dict(weights)
    return model


def check_config_sizes(cfg: WorldModelConfig, weights: dict[str, torch.Tensor], where) -> None:
    """Raise CheckpointError naming a model_config size that no model with `weights` can have
    (`where`: the sidecar, for the message)."""
    n_tensors, n_weights = len(weights), sum(t.numel() for t in weights.values())
    for owner, sub in (("", cfg), ("backbone.", cfg.backbone)):
        for f in dataclasses.fields(sub):
            value = getattr(sub, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                continue
            bound, what = (n_tensors, "tensors") if f.name in ("n_layers", "mlp_layers") else (n_weights, "weights")
            if value > max(bound, 1):
                raise CheckpointError(f"{where}: field model_config.{owner}{f.name} is {value}, more than the "
                                      f"{bound} {what} {MODEL_FILE} holds")


@dataclass(frozen=True)
class ModelSource:
    """A world model named as plain data: a checkpoint, or a preset with its two spaces.

    Exactly one of `checkpoint` and `preset` is set. An untrained preset model is initialised
    from `seed`, so two processes that build the same source hold the same weights.
    """

    checkpoint: str | None = None  # run or checkpoint directory of a trained model
    preset: str | None = None  # an untrained model of this preset (smoke runs, benchmarks)
    obs_space: dict | None = None  # SPACE dict of observations (preset only)
    action_space: dict | None = None  # SPACE dict of actions (preset only)
    seed: int = 0  # initialisation seed (preset only)
    kernels: str | None = None  # override the backbone's kernel choice

    def __post_init__(self):
        if (self.checkpoint is None) == (self.preset is None):
            raise ValueError("ModelSource needs exactly one of checkpoint and preset")
        if self.preset is not None:
            for name in ("obs_space", "action_space"):
                check_space_dict(getattr(self, name))

    @classmethod
    def of_checkpoint(cls, path, kernels: str | None = None) -> ModelSource:
        return cls(checkpoint=str(path), kernels=kernels)

    @classmethod
    def of_preset(cls, preset: str, obs_space: dict, action_space: dict, seed: int = 0) -> ModelSource:
        return cls(preset=preset, obs_space=obs_space, action_space=action_space, seed=int(seed))

    def load(self, device: str | torch.device = "cpu"):
        """Build the model (eval mode) on `device`."""
        if self.checkpoint is not None:
            return load_model(self.checkpoint, device=device, kernels=self.kernels)[0]
        from worldssm.model.config import preset

        cfg = preset(self.preset)
        if self.kernels is not None:
            cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, kernels=self.kernels))
        torch.manual_seed(self.seed)
        return WorldModel(cfg, self.obs_space, self.action_space).to(device).eval()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> ModelSource:
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, dict) or set(d) - known:
            raise ValueError(f"ModelSource: unknown fields {sorted(set(d) - known) if isinstance(d, dict) else d!r}")
        return cls(**d)
