"""One Mamba-2 layer step between the projections: the specification of the fused step kernel.

Given the in-projection of one token per agent, update each agent's conv and SSM state in place
inside a slab addressed by slot indices, and return the gated-normed output ready for the
out-projection. The norm is grouped per head (group size P), so one program per (agent, head)
can fuse it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gated_rmsnorm_ref(y: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """rmsnorm(y * silu(z)) * weight, normalised over the last dim (one head).

    Args:
        y: [..., H, P].
        z: gate, same shape as y.
        weight: [H, P].
        eps: added to the mean square.
    """
    g = y * F.silu(z)
    return g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + eps) * weight


def split_zxbcdt(zxbcdt: torch.Tensor, n_heads: int, head_dim: int, d_state: int):
    """Split an in-projection [..., 2*H*P + 2*N + H] into z [..., H*P], xBC [..., H*P + 2N], dt [..., H]."""
    d_inner = n_heads * head_dim
    return torch.split(zxbcdt, [d_inner, d_inner + 2 * d_state, n_heads], dim=-1)


def mamba2_step_ref(
    zxbcdt: torch.Tensor,
    conv_state: torch.Tensor,
    ssm_state: torch.Tensor,
    slots: torch.Tensor,
    reset: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor,
    dt_bias: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
    norm_weight: torch.Tensor,
    n_heads: int,
    head_dim: int,
    d_state: int,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Advance the agents in `slots` by one step, in place.

    Args:
        zxbcdt: in-projection of this step's input [B, 2*H*P + 2*N + H].
        conv_state: slab [S, K-1, H*P + 2N]; rows `slots` are read and written.
        ssm_state: slab [S, H, P, N] (float32 or bfloat16 storage); rows `slots` read and written.
        slots: int64 [B], distinct slot indices.
        reset: bool [B]; True zeroes the agent's state before the step (it is not read).
        conv_weight: [H*P + 2N, K]; conv_bias: [H*P + 2N].
        dt_bias: [H]; A: negative decay rates [H] (precomputed -exp(A_log)); D: [H].
        norm_weight: [H*P].
        n_heads, head_dim, d_state: H, P, N.
        eps: gated-norm epsilon.

    Returns:
        y [B, H*P] in zxbcdt's dtype. Arithmetic is float32 (float64 for float64 inputs).
    """
    cdt = torch.float64 if zxbcdt.dtype == torch.float64 else torch.float32
    b = zxbcdt.shape[0]
    h, p, n = n_heads, head_dim, d_state
    z, xbc, dt = split_zxbcdt(zxbcdt.to(cdt), h, p, n)
    # torch.where rather than a multiply: a reset row's old state is never used, even if NaN.
    old_conv = torch.where(reset[:, None, None], 0.0, conv_state[slots].to(cdt))  # [B, K-1, Cd]
    window = torch.cat([old_conv, xbc[:, None]], dim=1)  # [B, K, Cd]
    conv_state[slots] = window[:, 1:].to(conv_state.dtype)
    xbc = F.silu(torch.einsum("bkc,ck->bc", window, conv_weight.to(cdt)) + conv_bias.to(cdt))  # [B, Cd]
    x, Bm, Cm = torch.split(xbc, [h * p, n, n], dim=-1)
    x = x.view(b, h, p)
    dt = F.softplus(dt + dt_bias.to(cdt))  # [B, H]
    decay = torch.exp(dt * A.to(cdt))  # [B, H]
    state = torch.where(reset[:, None, None, None], 0.0, ssm_state[slots].to(cdt))  # [B, H, P, N]
    state = state * decay[..., None, None] + (dt[..., None] * x)[..., None] * Bm[:, None, None, :]
    ssm_state[slots] = state.to(ssm_state.dtype)
    y = torch.einsum("bhpn,bn->bhp", state, Cm) + D.to(cdt)[:, None] * x  # [B, H, P]
    y = gated_rmsnorm_ref(y, z.view(b, h, p), norm_weight.to(cdt).view(h, p), eps)
    return y.reshape(b, h * p).to(zxbcdt.dtype)


def mamba2_sequence_ref(
    zxbcdt: torch.Tensor,
    conv_state: torch.Tensor | None,
    ssm_state: torch.Tensor | None,
    resets: torch.Tensor | None,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor,
    dt_bias: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
    norm_weight: torch.Tensor,
    n_heads: int,
    head_dim: int,
    d_state: int,
    eps: float = 1e-5,
    chunk_size: int = 32,
    scan=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same layer middle over a whole sequence: conv, chunked scan, gated norm.

    T calls of `mamba2_step_ref` equal one call of this over T.

    Args:
        zxbcdt: [B, T, 2*H*P + 2*N + H].
        conv_state: [B, K-1, H*P + 2N] or None; ssm_state: [B, H, P, N] or None (zeros).
        resets: bool [B, T] or None.
        chunk_size: steps per chunk of the scan, passed to whichever scan runs (the Triton scan
            needs a power of two >= 16).
        scan: the scan function, e.g. `worldssm.kernels.scan.get_scan(impl)`; None is
            `ssd_scan_chunked`. Called with the `chunk_size` keyword.
        Other arguments as in `mamba2_step_ref`.

    Returns:
        (y [B, T, H*P], final conv state [B, K-1, Cd], final ssm state [B, H, P, N] float32/64).
    """
    from worldssm.kernels.conv.ref import causal_conv_ref
    from worldssm.kernels.scan.ref import ssd_scan_chunked

    b, t, _ = zxbcdt.shape
    h, p, n = n_heads, head_dim, d_state
    z, xbc, dt = split_zxbcdt(zxbcdt, h, p, n)
    xbc, conv_final = causal_conv_ref(xbc, conv_weight.to(xbc.dtype), conv_bias, conv_state, resets)
    x, Bm, Cm = torch.split(xbc, [h * p, n, n], dim=-1)
    dt = F.softplus(dt.float() + dt_bias.float()) if dt.dtype != torch.float64 else F.softplus(dt + dt_bias)
    scan = ssd_scan_chunked if scan is None else scan
    y, ssm_final = scan(x.reshape(b, t, h, p), dt, A, Bm, Cm, D, resets, ssm_state, chunk_size=chunk_size)
    y = gated_rmsnorm_ref(y, z.reshape(b, t, h, p), norm_weight.view(h, p).to(y.dtype), eps)
    return y.reshape(b, t, h * p), conv_final, ssm_final
