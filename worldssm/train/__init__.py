"""Training: the loop, checkpoints, and open-loop evaluation."""

from worldssm.train.checkpoint import load_checkpoint, load_model, save_checkpoint
from worldssm.train.config import TrainConfig
from worldssm.train.trainer import Trainer, TrainingDiverged, train

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "train", "load_checkpoint", "load_model", "save_checkpoint"]
