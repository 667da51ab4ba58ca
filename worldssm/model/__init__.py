"""The world model: configs, Mamba-2 backbone, heads, loading. Imports only torch, numpy, the
kernels and the leaf modules (checkpoint, spaces, codec, errors)."""

from worldssm.model.config import PRESETS, BackboneConfig, WorldModelConfig, preset, preset_for
from worldssm.model.loading import ModelSource, load_model
from worldssm.model.mamba2 import GRUBackbone, Mamba2Backbone, build_backbone
from worldssm.model.world_model import Prediction, WorldModel

__all__ = [
    "PRESETS", "BackboneConfig", "WorldModelConfig", "preset", "preset_for", "GRUBackbone", "Mamba2Backbone",
    "build_backbone", "ModelSource", "Prediction", "WorldModel", "load_model",
]
