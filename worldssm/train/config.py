"""Training configuration: a frozen dataclass with a help line per field."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from worldssm.model.config import BACKBONE_KINDS, PRESETS, check_field_types

DEVICES = ("auto", "cpu", "cuda")
PRESET_NAMES = tuple(PRESETS)
SEED_END = 2**63
STEPS_END = 10**8  # checkpoint directories are named step-%08d
# Bounds that keep a config read from a checkpoint from asking for absurd memory or threads.
MAX_BATCH_STEPS = 2**22  # batch_size * seq_len: steps in one batch
MAX_THREADS = 1024


def check_seed(owner: str, seed: int) -> None:
    """Raise ValueError unless `seed` is in [0, 2**63): numpy rejects negative seeds, torch large ones.

    Args:
        owner: the config class name, for the message.
        seed: the value to check.
    """
    if not 0 <= seed < SEED_END:
        raise ValueError(f"{owner}.seed must be in [0, 2**63), got {seed}")


@dataclass(frozen=True)
class TrainConfig:
    """How to train a world model on a rollout dataset."""

    # The flags' choices and __post_init__ check the same constants (worldssm.commands.flags).
    CHOICES: ClassVar[dict[str, tuple]] = {"preset": PRESET_NAMES, "device": DEVICES, "backbone": BACKBONE_KINDS}

    preset: str = "SMALL"  # model preset (worldssm.model.PRESETS): DEBUG is tiny, SMALL fits a CPU, BASE a GPU
    steps: int = 2000  # optimiser updates in total, below 10**8 (a resumed run continues up to this)
    batch_size: int = 16  # sequences per batch
    seq_len: int = 64  # steps per sequence
    backbone: str = "mamba2"  # sequence model: mamba2, or the gru / transformer baseline of matched size (preset_for)
    mean_rows: float | None = None  # share of training rows fed the expected latent (WorldModelConfig.mean_rows); none: the preset's
    loss_con: float | None = None  # weight of the continue loss (WorldModelConfig.loss_con); none: the preset's
    lr: float = 1e-3  # AdamW learning rate
    warmup: int = 100  # linear learning-rate warm-up steps
    lr_final: float = 0.1  # after the warm-up the rate falls on a cosine to this fraction of lr (1: constant)
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 100.0  # clip the global gradient norm to this
    seed: int = 0  # seeds the model init, the sampler and latent draws
    val_fraction: float = 0.1  # fraction of episodes held out for validation and eval
    log_every: int = 50  # steps between metric lines (and validation losses)
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end)
    device: str = "auto"  # where to train; auto: cuda if torch sees one, else cpu
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    threads: int = 0  # torch CPU threads (at most 1024); 0 keeps torch's default

    def __post_init__(self):
        # Every check is written so that NaN fails it (NaN compares False with everything).
        for name in ("steps", "batch_size", "seq_len", "log_every", "checkpoint_every"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.steps < STEPS_END:
            raise ValueError(f"TrainConfig.steps must be < 10**8 (checkpoints are named by 8 digits), got {self.steps}")
        for name in ("warmup", "threads"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.threads <= MAX_THREADS:
            raise ValueError(f"TrainConfig.threads must be <= {MAX_THREADS}, got {self.threads}")
        if not self.batch_size * self.seq_len <= MAX_BATCH_STEPS:
            raise ValueError(f"TrainConfig.batch_size * seq_len must be <= {MAX_BATCH_STEPS} (steps in one batch), "
                             f"got {self.batch_size} * {self.seq_len}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"TrainConfig.val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("lr", "grad_clip"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"TrainConfig.{name} must be finite and > 0, got {getattr(self, name)}")
        if not 0.0 < self.lr_final <= 1.0:
            raise ValueError(f"TrainConfig.lr_final must be in (0, 1], got {self.lr_final}")
        if self.backbone not in BACKBONE_KINDS:
            raise ValueError(f"TrainConfig.backbone must be one of {BACKBONE_KINDS}, got {self.backbone!r}")
        if self.mean_rows is not None and not 0.0 <= self.mean_rows <= 1.0:
            raise ValueError(f"TrainConfig.mean_rows must be in [0, 1] or None, got {self.mean_rows}")
        if self.loss_con is not None and not (self.loss_con >= 0 and math.isfinite(self.loss_con)):
            raise ValueError(f"TrainConfig.loss_con must be finite and >= 0 or None, got {self.loss_con}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ValueError(f"TrainConfig.weight_decay must be finite and >= 0, got {self.weight_decay}")
        check_seed("TrainConfig", self.seed)
        # worldssm.model.preset() looks names up case-insensitively; so does this check.
        if self.preset.upper() not in PRESET_NAMES:
            raise ValueError(f"TrainConfig.preset must be one of {PRESET_NAMES}, got {self.preset!r}")
        if self.device not in DEVICES:
            raise ValueError(f"TrainConfig.device must be one of {DEVICES}, got {self.device!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of `to_dict`; ValueError names a field that is unknown, mistyped or out of range."""
        check_field_types(cls, d)
        # Runs from before these fields existed trained a Mamba-2 at a constant rate: resume so.
        d = {"backbone": "mamba2", "lr_final": 1.0, **d}
        return cls(**d)
