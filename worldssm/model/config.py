"""Typed, frozen configs for the world model, with named presets.

Every field has a help line; `__post_init__` validates and raises ValueError naming the field.
Configs travel with every checkpoint as plain dicts (`to_dict` / `from_dict`), never pickled.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field

from worldssm.kernels import KERNEL_IMPLS

BACKBONE_KINDS = ("mamba2", "gru", "transformer")

MAX_CHUNK = 256  # the scan pads a sequence to whole chunks: a bound keeps that padding small


def check_field_types(cls, d) -> None:
    """Raise ValueError naming the field unless `d` is a dict of `cls`'s fields with values of
    the annotated types (int: not bool; float: int or float; str; nested dataclasses skipped).

    Configs read from files go through this before `cls(**d)`, so a wrong type is a clear error
    rather than a TypeError from a comparison deep in `__post_init__`.
    """
    if not isinstance(d, dict):
        raise ValueError(f"{cls.__name__} must be a dict of fields, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)[:10]}")
    hints = typing.get_type_hints(cls)
    checks = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
              float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              str: lambda v: isinstance(v, str), bool: lambda v: isinstance(v, bool)}
    for name, value in d.items():
        check = checks.get(hints[name])
        if check is not None and not check(value):
            raise ValueError(f"{cls.__name__}.{name} must be {hints[name].__name__}, got {type(value).__name__}")


@dataclass(frozen=True)
class BackboneConfig:
    """The sequence model: a stack of residual Mamba-2 blocks, or a GRU or Transformer baseline.

    d_state, d_conv, chunk_size, state_dtype and kernels are read by Mamba-2 only; context and
    mlp_ratio by the Transformer only.
    """

    kind: str = "mamba2"  # sequence core: "mamba2", or the "gru" or "transformer" baseline
    d_model: int = 256  # width D of the residual stream
    n_layers: int = 4  # number of blocks L
    n_heads: int = 8  # SSM or attention heads H; inner width is H * head_dim
    head_dim: int = 64  # channels per head P (even for the transformer: rotary pairs)
    d_state: int = 64  # state size per channel N
    d_conv: int = 4  # causal conv width K
    chunk_size: int = 32  # chunk length of the training scan: a power of two >= 16 (Triton scan)
    norm_eps: float = 1e-5  # epsilon of every RMSNorm
    state_dtype: str = "float32"  # storage dtype of the SSM state: "float32" or "bfloat16"
    kernels: str = "auto"  # "auto" (Triton on CUDA, reference on CPU), "reference" or "triton"
    context: int = 256  # transformer: attention window in steps, the current one included (KV cache length)
    mlp_ratio: int = 4  # transformer: MLP hidden width is mlp_ratio * d_model

    def __post_init__(self):
        for name in ("d_model", "n_layers", "n_heads", "head_dim", "d_state", "context", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"BackboneConfig.{name} must be >= 1, got {getattr(self, name)}")
        # Every scan gets this chunk, and the Triton scan tiles it: a power of two, at least 16.
        if not 16 <= self.chunk_size <= MAX_CHUNK or self.chunk_size & (self.chunk_size - 1):
            raise ValueError(f"BackboneConfig.chunk_size must be a power of two in [16, {MAX_CHUNK}], "
                             f"got {self.chunk_size}")
        if self.kind not in BACKBONE_KINDS:
            raise ValueError(f"BackboneConfig.kind must be one of {BACKBONE_KINDS}, got {self.kind!r}")
        if self.kind == "transformer" and self.head_dim % 2:
            raise ValueError(f"BackboneConfig.head_dim must be even for the transformer (rotary "
                             f"positions rotate channel pairs), got {self.head_dim}")
        if self.kind == "transformer" and self.state_dtype != "float32":
            raise ValueError(f"BackboneConfig.state_dtype: the transformer's KV cache is float32, "
                             f"got {self.state_dtype!r}")
        if self.d_conv < 2:
            raise ValueError(f"BackboneConfig.d_conv must be >= 2, got {self.d_conv}")
        if not (self.norm_eps > 0 and math.isfinite(self.norm_eps)):
            raise ValueError(f"BackboneConfig.norm_eps must be finite and > 0, got {self.norm_eps}")
        if self.state_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"BackboneConfig.state_dtype must be float32 or bfloat16, got {self.state_dtype!r}")
        if self.kernels not in KERNEL_IMPLS:
            raise ValueError(f"BackboneConfig.kernels must be one of {KERNEL_IMPLS}, got {self.kernels!r}")

    @property
    def d_inner(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.d_state


@dataclass(frozen=True)
class WorldModelConfig:
    """Encoder, latent, heads and losses around the backbone (the DreamerV3 recipe)."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    latent_vars: int = 32  # number of categorical latent variables
    latent_classes: int = 32  # classes per latent variable
    unimix: float = 0.01  # uniform mix into every categorical
    mlp_width: int = 256  # hidden width of encoder, decoder and head MLPs
    mlp_layers: int = 2  # hidden layers of those MLPs
    cnn_depth: int = 32  # channels of the first image conv layer (doubles per stage)
    action_embed: int = 32  # width of the action embedding
    reward_bins: int = 255  # two-hot bins of the symlog reward head
    reward_range: float = 20.0  # bins span [-range, range] in symlog space
    free_bits: float = 1.0  # KL below this many nats is not penalised
    loss_rec: float = 1.0  # weight of the reconstruction loss
    loss_rew: float = 1.0  # weight of the reward loss
    loss_con: float = 1.0  # weight of the continue loss
    loss_dyn: float = 1.0  # weight of KL(sg(post) || prior)
    loss_rep: float = 0.1  # weight of KL(post || sg(prior))
    obs_norm: bool = True  # standardise vector observations per dimension with the training data's statistics
    # Training: this fraction of each batch's sequences feeds the backbone the posterior's
    # expectation (class probabilities) instead of a one-hot sample, as the engine, planners and
    # eval do, so the heads also learn from what they are given at inference.
    mean_rows: float = 0.0

    def __post_init__(self):
        if isinstance(self.backbone, dict):
            object.__setattr__(self, "backbone", BackboneConfig(**self.backbone))
        for name in ("latent_vars", "latent_classes", "mlp_width", "mlp_layers", "cnn_depth",
                     "action_embed", "reward_bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"WorldModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.mean_rows <= 1.0:
            raise ValueError(f"WorldModelConfig.mean_rows must be in [0, 1], got {self.mean_rows}")
        if not 0.0 <= self.unimix < 1.0:
            raise ValueError(f"WorldModelConfig.unimix must be in [0, 1), got {self.unimix}")
        if self.reward_bins < 2:
            raise ValueError(f"WorldModelConfig.reward_bins must be >= 2, got {self.reward_bins}")
        if not (self.reward_range > 0 and math.isfinite(self.reward_range)):
            raise ValueError(f"WorldModelConfig.reward_range must be finite and > 0, got {self.reward_range}")
        for name in ("free_bits", "loss_rec", "loss_rew", "loss_con", "loss_dyn", "loss_rep"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"WorldModelConfig.{name} must be finite and >= 0, got {getattr(self, name)}")

    @property
    def latent_dim(self) -> int:
        return self.latent_vars * self.latent_classes

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "WorldModelConfig":
        """Inverse of `to_dict`, for a dict read from a file (one written before observation
        statistics were kept loads with `obs_norm` off).

        Raises:
            ValueError: naming the field: unknown, of the wrong type, or out of range.
        """
        check_field_types(cls, d)
        if "obs_norm" not in d:  # a checkpoint from before observation statistics were kept
            d = {**d, "obs_norm": False}
        bb = d.get("backbone", {})
        check_field_types(BackboneConfig, bb)
        return cls(**{**d, "backbone": BackboneConfig(**bb)})


PRESETS: dict[str, WorldModelConfig] = {
    # Tiny: for tests; every shape odd or small so indexing bugs show.
    "DEBUG": WorldModelConfig(
        backbone=BackboneConfig(d_model=24, n_layers=2, n_heads=3, head_dim=8, d_state=5, chunk_size=16),
        latent_vars=4, latent_classes=5, mlp_width=32, mlp_layers=1, cnn_depth=4, action_embed=8,
        reward_bins=31,
    ),
    # CPU quickstart: trains in minutes on 2 cores. Reconstruction weighs 10: a vector observation
    # of 8 to 17 dimensions gives a reconstruction loss far below the KL terms, and at weight 1
    # the latent kept too little of it (Hopper-v5 at 6,000 updates: 0.217x -> 0.188x repeat-last
    # at horizon 1; tests/bench/results/experiments/loss-rec-Hopper-v5.json).
    "SMALL": WorldModelConfig(
        backbone=BackboneConfig(d_model=128, n_layers=2, n_heads=4, head_dim=32, d_state=16, chunk_size=32),
        latent_vars=16, latent_classes=16, mlp_width=256, mlp_layers=2, cnn_depth=16, action_embed=16,
        loss_rec=10.0,
        # The continue flag weighs 5: an end is a one-step forecast of crossing a threshold (Hopper's
        # health), learnt from 4% of the steps; at weight 1 Hopper-v5's continue F1 was 0.898, at 5
        # 0.918 (tests/bench/results/experiments/fidelity-Hopper-v5-loss-con-5.json).
        loss_con=5.0,
    ),
    # GPU: d_model 256, 4 layers, H=8, P=64, N=64 (the performance-target shape), chunk 32.
    "BASE": WorldModelConfig(),
}


def preset(name: str) -> WorldModelConfig:
    """Look up a preset by name (case-insensitive)."""
    key = name.upper()
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[key]


# Backbone fields that bring each baseline to its Mamba-2 preset's parameter count. d_model stays
# the preset's, so everything around the backbone (encoder, decoder, heads) is the same model.
_MATCHED_BACKBONES: dict[tuple[str, str], dict] = {
    ("DEBUG", "gru"): dict(n_layers=1),
    ("DEBUG", "transformer"): dict(n_layers=2, n_heads=3, head_dim=4, mlp_ratio=1, context=8),
    ("SMALL", "gru"): dict(n_layers=1),
    ("SMALL", "transformer"): dict(n_layers=2, n_heads=4, head_dim=16, mlp_ratio=1),
    ("BASE", "gru"): dict(),
    ("BASE", "transformer"): dict(n_layers=2, n_heads=4, head_dim=64, mlp_ratio=4),
}


def preset_for(name: str, backbone: str) -> WorldModelConfig:
    """The preset `name` with its backbone swapped for `backbone`, at a matched parameter count.

    The baselines keep the preset's d_model (so encoder, decoder and heads are unchanged) and
    take the layers, heads and MLP ratio that bring the whole world model within 10% of the
    Mamba-2 preset's parameter count. Counts (whole model with a Box(3) observation and a Box(1)
    action, Pendulum-v1's spaces; the backbone alone in brackets):

        DEBUG  mamba2       12,033  (4,558)
               gru          11,099  (3,624)      -7.8%   1 layer
               transformer  12,203  (4,728)      +1.4%   2 layers, 3 heads of 4, MLP 1x, context 8
        SMALL  mamba2      875,643  (109,784)
               gru         865,059  (99,200)     -1.2%   1 layer
               transformer 897,571  (131,712)    +2.5%   2 layers, 4 heads of 16, MLP 1x
        BASE   mamba2    3,452,323  (1,728,352)
               gru       3,303,235  (1,579,264)  -4.3%   4 layers
               transformer 3,298,115 (1,574,144) -4.5%   2 layers, 4 heads of 64, MLP 4x

    Larger observation spaces add the same encoder and decoder parameters to every backbone,
    so the relative gaps only shrink. tests/model/test_transformer.py checks these numbers.

    Args:
        name: a preset name (case-insensitive).
        backbone: "mamba2" (the preset itself), "gru" or "transformer".

    Raises:
        ValueError: unknown preset or backbone.
    """
    cfg = preset(name)
    if backbone not in BACKBONE_KINDS:
        raise ValueError(f"backbone must be one of {BACKBONE_KINDS}, got {backbone!r}")
    if backbone == "mamba2":
        return cfg
    fields = _MATCHED_BACKBONES[(name.upper(), backbone)]
    return dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, kind=backbone, **fields))
