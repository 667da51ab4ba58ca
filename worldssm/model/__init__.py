"""The world model: configs, Mamba-2 backbone, heads. Imports only torch, numpy and the kernels."""

from worldssm.model.config import PRESETS, BackboneConfig, WorldModelConfig, preset
from worldssm.model.mamba2 import GRUBackbone, Mamba2Backbone, build_backbone
from worldssm.model.world_model import Prediction, WorldModel

__all__ = [
    "PRESETS", "BackboneConfig", "WorldModelConfig", "preset", "GRUBackbone", "Mamba2Backbone",
    "build_backbone", "Prediction", "WorldModel",
]
