"""Where a world model comes from: a trained checkpoint, or an untrained preset over two spaces.

`load_model(path)` builds a trained model from a checkpoint (`worldssm.checkpoint` reads the
files; nothing is executed). `ModelSource` names either kind of model as plain data, so a
process that has only the name (an EngineActor, a benchmark's subprocess) can build it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from worldssm.checkpoint import load_checkpoint
from worldssm.errors import CheckpointError
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
        CheckpointError: missing, damaged, or weights that do not match the config.
    """
    from worldssm.model.config import WorldModelConfig
    from worldssm.model.world_model import WorldModel

    sidecar, weights, _, ckpt = load_checkpoint(path)
    cfg = WorldModelConfig.from_dict(sidecar["model_config"])
    if kernels is not None:
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, kernels=kernels))
    data = sidecar["data"]
    model = WorldModel(cfg, data["observation_space"], data["action_space"])
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{ckpt}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    return model.to(device).eval(), sidecar


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
        from worldssm.model.world_model import WorldModel

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
