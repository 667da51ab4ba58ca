"""Training: the loop and open-loop evaluation (checkpoint files: `worldssm.checkpoint`)."""

from worldssm.train.config import TrainConfig
from worldssm.train.trainer import Trainer, TrainingDiverged, train

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "train"]
