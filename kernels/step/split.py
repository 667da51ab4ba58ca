"""The Mamba-2 layer step as the split path runs it: the conv kernel, then the state kernel.

`mamba2_step_split` has the signature and results of `ref.mamba2_step_ref` and of v1's
`mamba2_step_triton`, and takes v1's place between cuBLAS projections on the "split" path (the
default above LAYER_MAX_BATCH agents, see kernels/step/README.md). It runs the layer path's two
kernels on an in-projection that cuBLAS computed:

1. `layer._norm_in_kernel` with PROJ=False: per (row block, column block) of the in-projection,
   the depthwise conv + SiLU of the x, B and C columns (each program owns its cells' conv rows
   and shifts them in place), softplus(dt + bias): float32 rows [. | x | B | C | dt], the z
   columns skipped (COL0=HP).
2. `layer._ssm_kernel`: one program per (agent, HB heads), the streaming pass over the state; it
   reads z straight from cuBLAS's rows. Against a float32 copy of z in act (the conv kernel
   reading 2 and writing 4 bytes a column, the state kernel reading 4), that is 8 x H*P bytes
   less per agent and layer.

v1's single kernel needs a per-row arrival counter, because the 2N B and C conv channels are
shared by all heads of a row; here the conv is done before the state pass, so nothing is shared.
It is built for large batches: at 16,384 agents the layer path's own in-projection (a Triton GEMM
with the conv in its epilogue) costs about 245 us a layer on an H200 where cuBLAS costs about 22,
and its state kernel streams at 90% of copy bandwidth against 79% for v1's (which also needs the
counter); at 1,024 and below the layer path's fused projections win
(tests/bench/results/experiments/step-split.json).

A first design did the B/C conv in its own launch and each head's x conv inside the state
kernel; that state kernel ran at 74% of copy bandwidth against 90% for the layer path's (H200,
16,384 agents), so it was dropped (its timings are in the same file).
"""

from __future__ import annotations

import torch
import triton

from worldssm.kernels.step.layer import _norm_in_kernel, _tiles, ssm_step_triton
from worldssm.kernels.step.pdl import launch_kwargs
from worldssm.kernels.step.triton import _alloc, _check


def conv_tiles(rows: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) of the conv kernel: above 256 rows, 16 rows by 128 columns
    of 4 warps, where the layer path's in-projection takes 32 x 64 of 8 (`layer._tiles`). H100,
    BASE whole observe step: 16,384 agents 7,509 -> 7,408 us, 4,096 1,971 -> 1,961; an earlier
    run 7,561 -> 7,474 (tests/bench/results/experiments/wm-mlp-tiles-h100.json)."""
    return (16, 128, 4) if rows > 256 else _tiles(rows, wide=True)


def mamba2_step_split(
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
    """Advance the agents in `slots` by one step, in place: two Triton launches, no counter.

    Same contract as `worldssm.kernels.step.ref.mamba2_step_ref` (see it for the arguments) and
    `mamba2_step_triton`. Slots must be distinct. No host synchronisation: safe to capture in a
    CUDA graph.

    Returns:
        y [B, H*P] in zxbcdt's dtype, ready for the out-projection.
    """
    h, p, n = int(n_heads), int(head_dim), int(d_state)
    _check(zxbcdt, conv_state, ssm_state, slots, reset, conv_weight, conv_bias, dt_bias, A, D, norm_weight, h, p, n)
    b, k, hp = zxbcdt.shape[0], conv_weight.shape[1], h * p
    nconv, nout = hp + 2 * n, zxbcdt.shape[1]
    if b == 0:
        return _alloc(0, hp, dtype=zxbcdt.dtype, device=zxbcdt.device)
    pdl, extra = launch_kwargs(zxbcdt.device)
    reset_u8 = (reset.view(torch.uint8) if reset.dtype == torch.bool else reset).contiguous()
    slots = slots.contiguous()
    act = _alloc(b, nout, dtype=torch.float32, device=zxbcdt.device)
    bm, bn, warps = conv_tiles(b)
    # The z columns are left to the state kernel, which reads them from zxbcdt as they are
    # (bf16 from cuBLAS): act's first HP columns stay unwritten.
    _norm_in_kernel[(triton.cdiv(nout - hp, bn), triton.cdiv(b, bm))](
        zxbcdt, zxbcdt.stride(0), zxbcdt, zxbcdt, 0, act, act.stride(0),
        conv_state, conv_state.stride(0), conv_state.stride(1), slots, reset_u8,
        conv_weight, conv_weight.stride(0), conv_weight.stride(1), conv_bias, dt_bias,
        b, 0.0,
        D=1, NOUT=nout, HP=hp, NCONV=nconv, K=k, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=16,
        IEEE=False, PDL=pdl, PROJ=False, COL0=hp, num_warps=warps, **extra,
    )
    return ssm_step_triton(act, ssm_state, slots, reset_u8, A, D, norm_weight, h, p, n, eps, zxbcdt.dtype, z=zxbcdt)
