"""The weights one inference step of a `WorldModel` reads, as plain float32 numpy arrays.

`WorldModel.step_weights()` builds a `StepWeights` with the helpers below; the numpy step
(`numpy_step.py`) reads nothing else, so the model's module structure is named in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from worldssm.model.mamba2 import Mamba2Mixer, RMSNorm
from worldssm.model.nets import ActionEncoder


@dataclass(frozen=True)
class LinearWeights:
    """y = x @ w + b."""

    w: np.ndarray  # [in, out] (the transpose of nn.Linear's weight)
    b: np.ndarray  # [out]


@dataclass(frozen=True)
class MLPBlock:
    """One hidden block of an `nets.mlp`: x @ w + b, then LayerNorm over W, then SiLU."""

    linear: LinearWeights  # w [in, W], b [W]
    norm_weight: np.ndarray  # [W]
    norm_bias: np.ndarray  # [W]
    norm_eps: float


@dataclass(frozen=True)
class MLPWeights:
    """An `nets.mlp`: its hidden blocks in order, then the output layer."""

    hidden: tuple[MLPBlock, ...]
    out: LinearWeights  # w [W, out], b [out]


@dataclass(frozen=True)
class ActionWeights:
    """`nets.ActionEncoder`: features @ proj.w + proj.b. The features are the one-hot of a
    discrete action [n], or a Box action flattened [A], scaled as 2 (a - low) / (high - low) - 1
    and clipped to [-1, 1] where `bounded`, and symlog(a) where not."""

    discrete: bool
    proj: LinearWeights  # w [n or A, E], b [E]
    low: np.ndarray | None  # [A] (Box only; 0 where unbounded)
    high: np.ndarray | None  # [A] (Box only; 1 where unbounded)
    bounded: np.ndarray | None  # bool [A] (Box only)


@dataclass(frozen=True)
class MixerWeights:
    """One residual block of the Mamba-2 backbone: x + out(mixer(RMSNorm(x) * norm)); the step
    between the projections is `kernels.step.ref.mamba2_step_ref`."""

    norm: np.ndarray  # [D] the block's pre-norm weight
    in_proj: np.ndarray  # [D, 2*H*P + 2N + H]: columns z, x, B, C, dt (no bias)
    conv_weight: np.ndarray  # [K, H*P + 2N]: row k weighs the input K-1-k steps back
    conv_bias: np.ndarray  # [H*P + 2N]
    dt_bias: np.ndarray  # [H]
    A: np.ndarray  # [H] = -exp(A_log)
    D: np.ndarray  # [H]
    gated_norm: np.ndarray  # [H, P] weight of the gated per-head RMSNorm
    out_proj: np.ndarray  # [H*P, D] (no bias)


@dataclass(frozen=True)
class StepWeights:
    """Every array that `observe_slots`, `imagine_slots` and `decode` read for a model with vector
    observations and a Mamba-2 backbone: read-only float32 numpy copies, matrices laid out for
    `x @ w`. Letters: O the flattened observation, V*K the latent, E the action embedding, W the
    MLP width, R the reward bins; D, H, P, N, K as in the backbone."""

    encoder: MLPWeights  # symlog((obs - obs_loc) / obs_scale) [B, O] -> posterior logits [B, V*K]
    decoder: MLPWeights  # [z, h] [B, V*K + D] -> symlog((obs - obs_loc) / obs_scale) [B, O]
    prior_head: MLPWeights  # h [B, D] -> prior logits of z_{t+1} [B, V*K]
    reward_head: MLPWeights  # h [B, D] -> reward bin logits [B, R]
    cont_head: MLPWeights  # h [B, D] -> continue logit [B, 1]
    action: ActionWeights  # a [B, ...] -> [B, E]
    in_proj: LinearWeights  # [z, action embedding] [B, V*K + E] -> backbone input [B, D]
    layers: tuple[MixerWeights, ...]  # L residual blocks
    final_norm: np.ndarray  # [D] the backbone's final RMSNorm weight
    reward_bins: np.ndarray  # [R] bin centres in symlog space
    obs_loc: np.ndarray  # [O] observation location (zeros where the model keeps no statistics)
    obs_scale: np.ndarray  # [O] observation scale (ones where the model keeps no statistics)
    norm_eps: float  # epsilon of every RMSNorm (pre-norms, gated norms, final norm)
    latent_vars: int  # V
    latent_classes: int  # K
    unimix: float  # share of a uniform distribution mixed into every categorical
    n_heads: int  # H
    head_dim: int  # P
    d_state: int  # N
    obs_shape: tuple[int, ...]  # one observation's shape (O is its product)


def array(t: torch.Tensor) -> np.ndarray:
    """A read-only float32 (bool stays bool) C-contiguous numpy copy of a parameter or buffer."""
    a = t.detach().cpu().numpy()
    a = np.array(a, dtype=a.dtype if a.dtype == np.bool_ else np.float32, order="C")
    a.flags.writeable = False
    return a


def linear_weights(weight: torch.Tensor, bias: torch.Tensor) -> LinearWeights:
    return LinearWeights(w=array(weight.T), b=array(bias))


def mlp_weights(seq: nn.Sequential) -> MLPWeights:
    """The arrays of an `nets.mlp` (Linear, LayerNorm, SiLU per hidden block, then Linear)."""
    *hidden, out = seq
    blocks = tuple(
        MLPBlock(linear_weights(lin.weight, lin.bias), array(norm.weight), array(norm.bias), float(norm.eps))
        for lin, norm in zip(hidden[0::3], hidden[1::3])
    )
    return MLPWeights(hidden=blocks, out=linear_weights(out.weight, out.bias))


def action_weights(enc: ActionEncoder) -> ActionWeights:
    proj = linear_weights(enc.proj.weight, enc.proj.bias)
    if enc.discrete:
        return ActionWeights(discrete=True, proj=proj, low=None, high=None, bounded=None)
    return ActionWeights(discrete=False, proj=proj, low=array(enc.low), high=array(enc.high),
                         bounded=array(enc.bounded))


def mixer_weights(norm: RMSNorm, m: Mamba2Mixer) -> MixerWeights:
    """A residual block's arrays: its pre-norm and its mixer."""
    h, p = m.cfg.n_heads, m.cfg.head_dim
    return MixerWeights(
        norm=array(norm.weight), in_proj=array(m.in_proj.weight.T), conv_weight=array(m.conv_weight.T),
        conv_bias=array(m.conv_bias), dt_bias=array(m.dt_bias), A=array(-torch.exp(m.A_log.detach())),
        D=array(m.D), gated_norm=array(m.norm_weight.view(h, p)), out_proj=array(m.out_proj.weight.T),
    )
