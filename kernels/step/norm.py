"""Fused residual add + RMSNorm in Triton: one launch where PyTorch issues about nine.

`add_rmsnorm_triton(x, delta, weight, eps)` returns `(s, rmsnorm(s) * weight)` with
`s = x + delta` (or `s = x` when delta is None), rounding like the model's PyTorch RMSNorm:
the sum in x's dtype, the normalised row rounded to x's dtype before the weight multiply.
Used between the step kernels of a pre-norm residual stack: per layer, add+norm, in_proj,
step, out_proj; the final norm takes the last residual add.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from worldssm.kernels.step.pdl import launch_kwargs, pdl_wait


@triton.jit
def _add_rmsnorm_kernel(x_ptr, d_ptr, w_ptr, s_ptr, o_ptr, rows, stride_x, stride_d, stride_s, stride_o, eps,
                        D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, HAS_DELTA: tl.constexpr,
                        PDL: tl.constexpr):
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]  # [R, 1]
    c = tl.arange(0, BLOCK_D)[None, :]  # [1, D]
    m = (r < rows) & (c < D)
    w = tl.load(w_ptr + c, mask=c < D, other=0.0).to(x_ptr.dtype.element_ty).to(tl.float32)
    pdl_wait(PDL)
    x = tl.load(x_ptr + r * stride_x + c, mask=m, other=0.0)
    if HAS_DELTA:
        s = (x.to(tl.float32) + tl.load(d_ptr + r * stride_d + c, mask=m, other=0.0).to(tl.float32))
        s = s.to(x_ptr.dtype.element_ty)
        tl.store(s_ptr + r * stride_s + c, s, mask=m)
    else:
        s = x
    sf = s.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(sf * sf, axis=1) / D + eps)  # [R]
    normed = (sf * rstd[:, None]).to(x_ptr.dtype.element_ty).to(tl.float32)
    tl.store(o_ptr + r * stride_o + c, (normed * w).to(o_ptr.dtype.element_ty), mask=m)


def _alloc(*shape, dtype, device) -> torch.Tensor:
    """Fresh output buffers; tests replace this to fill them with NaN."""
    return torch.empty(*shape, dtype=dtype, device=device)


def add_rmsnorm_triton(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float = 1e-5):
    """s = x + delta; return (s, rmsnorm(s) * weight), both in x's dtype. One launch.

    Args:
        x: residual stream [B, D] (last dim contiguous).
        delta: [B, D] added to x first, or None (then s is x itself, not a copy).
        weight: [D].
        eps: added to the mean square.
    """
    if x.dim() != 2 or x.stride(1) != 1:
        raise ValueError(f"x must be [B, D] with unit last stride, got {tuple(x.shape)}")
    b, d = x.shape
    if weight.shape != (d,) or (delta is not None and (delta.shape != x.shape or delta.stride(1) != 1)):
        raise ValueError("delta must match x and weight must be [D]")
    s = _alloc(b, d, dtype=x.dtype, device=x.device) if delta is not None else x
    out = _alloc(b, d, dtype=x.dtype, device=x.device)
    if b == 0:
        return s, out
    block_d = triton.next_power_of_2(d)
    block_r = max(1, min(16, 4096 // block_d))
    pdl, extra = launch_kwargs(x.device)
    _add_rmsnorm_kernel[(triton.cdiv(b, block_r),)](
        x, delta if delta is not None else x, weight, s, out, b,
        x.stride(0), delta.stride(0) if delta is not None else 0, s.stride(0), out.stride(0), float(eps),
        D=d, BLOCK_D=block_d, BLOCK_R=block_r, HAS_DELTA=delta is not None, PDL=pdl, num_warps=4, **extra,
    )
    return s, out
