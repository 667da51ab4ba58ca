"""Training configuration: a frozen dataclass with a help line per field."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """How to train a world model on a rollout dataset."""

    preset: str = "SMALL"  # model preset: DEBUG, SMALL or BASE
    steps: int = 2000  # optimiser steps in total (a resumed run continues up to this)
    batch_size: int = 16  # sequences per batch
    seq_len: int = 64  # steps per sequence
    lr: float = 1e-3  # AdamW learning rate
    warmup: int = 100  # linear learning-rate warm-up steps
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 100.0  # clip the global gradient norm to this
    seed: int = 0  # seeds the model init, the sampler and latent draws
    val_fraction: float = 0.1  # fraction of episodes held out for validation and eval
    log_every: int = 50  # steps between metric lines (and validation losses)
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end)
    device: str = "auto"  # "auto" (cuda if available), "cpu" or "cuda"
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    threads: int = 0  # torch CPU threads; 0 keeps torch's default

    def __post_init__(self):
        for name in ("steps", "batch_size", "seq_len", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"TrainConfig.val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"TrainConfig.device must be auto, cpu or cuda, got {self.device!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        if set(d) - known:
            raise ValueError(f"TrainConfig: unknown fields {sorted(set(d) - known)}")
        return cls(**d)
