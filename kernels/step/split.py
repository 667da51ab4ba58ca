"""The Mamba-2 layer step in two launches with no arrival counter: the large-batch state pass.

`mamba2_step_split` has the signature and results of `ref.mamba2_step_ref` (and of v1's
`mamba2_step_triton`, which it replaces on the "split" path). v1's one kernel needs a per-row
arrival counter, because the 2N B and C conv channels are shared by all heads of a row and their
conv rows may be shifted only once every head program has read them (about 10% of its time at
B=16,384). Here they are done first, once per row:

1. `_bc_conv_kernel`, one program per block of rows: the depthwise conv + SiLU of the B and C
   channels, shifting their conv rows in place; writes float32 [B, 2N].
2. `_ssm_conv_kernel`, one program per (agent, HB heads): the conv of its own x channels (it
   owns their conv rows: nobody else reads them), softplus(dt + bias), the state update, C
   readout, D skip, z gate and per-head gated norm. Apart from the 2N values of step 1 it reads
   only its state tile and its x channels' conv rows: at large B a streaming pass over the slab.

No PDL: launched with it (state tile, conv rows and the whole x conv before the wait) the pair
was slower at every batch on an H100 (7,296 against 6,883 us per BASE backbone step at 16,384
agents, 519 against 494 at 1,024; tests/bench/results/experiments/step-split-h100.json).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from worldssm.kernels.step.layer import _conv_history, _norm_in_kernel, _ssm_out, _tiles, ssm_step_triton
from worldssm.kernels.step.pdl import launch_kwargs
from worldssm.kernels.step.triton import _alloc, _check, _heads_per_program, _silu, _softplus


@triton.jit
def _bc_conv_kernel(
    zx_ptr, stride_zx, conv_ptr, stride_cs, stride_ck, slots_ptr, reset_ptr,
    cw_ptr, stride_cwc, stride_cwk, cb_ptr, bc_ptr, stride_bc, rows,
    C0: tl.constexpr, NC: tl.constexpr, ZX0: tl.constexpr, K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # Conv channels C0 .. C0+NC-1 (in-projection columns ZX0 + channel) of BLOCK_M rows.
    r = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    j = tl.arange(0, BLOCK_C)
    mr = r < rows
    mj = j < NC
    c = C0 + j
    slot = tl.load(slots_ptr + r, mask=mr, other=0).to(tl.int64)
    keep = mr & (tl.load(reset_ptr + r, mask=mr, other=1) == 0)
    cbias = tl.load(cb_ptr + c, mask=mj, other=0.0).to(tl.float32)
    cw_new = tl.load(cw_ptr + c * stride_cwc + (K - 1) * stride_cwk, mask=mj, other=0.0).to(tl.float32)
    base = conv_ptr + slot[:, None] * stride_cs + c[None, :]
    m_own = mr[:, None] & mj[None, :]
    # These conv rows belong to this program's cells alone.
    pre = _conv_history(base, stride_ck, (cw_ptr + c * stride_cwc)[None, :], stride_cwk, cbias[None, :],
                        keep[:, None] & mj[None, :], m_own, mj[None, :], K, True)
    v = tl.load(zx_ptr + r[:, None] * stride_zx + ZX0 + c[None, :], mask=m_own, other=0.0)
    tl.store(base + (K - 2) * stride_ck, v.to(conv_ptr.dtype.element_ty), mask=m_own)
    out = _silu(pre + v.to(tl.float32) * cw_new[None, :])
    tl.store(bc_ptr + r[:, None] * stride_bc + j[None, :], out, mask=m_own)


@triton.jit
def _ssm_conv_kernel(
    zx_ptr, stride_zx, bc_ptr, stride_bc, conv_ptr, stride_cs, stride_ck,
    ssm_ptr, stride_ss, stride_sh, stride_sp, slots_ptr, reset_ptr,
    cw_ptr, stride_cwc, stride_cwk, cb_ptr, dtb_ptr, a_ptr, d_ptr, nw_ptr, y_ptr, stride_y, eps,
    H: tl.constexpr, P: tl.constexpr, N: tl.constexpr, K: tl.constexpr, HB: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    G: tl.constexpr = H // HB
    HP: tl.constexpr = H * P
    pid = tl.program_id(0)
    b = (pid // G).to(tl.int64)
    heads = (pid % G) * HB + tl.arange(0, HB)  # [HB]
    offs_p = tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mp = offs_p < P
    mn = offs_n < N
    cx = heads[:, None] * P + offs_p[None, :]  # [HB, BP]: this program's x (and z) channels
    mx = mp[None, :] & (heads[:, None] < H)

    # ---- loads, state tile first; then the x conv, whose rows only this program touches -------
    slot = tl.load(slots_ptr + b).to(tl.int64)
    keep = tl.load(reset_ptr + b + tl.zeros([1], tl.int32)) == 0  # [1]
    s_ptrs = (ssm_ptr + slot * stride_ss + heads[:, None, None] * stride_sh
              + offs_p[None, :, None] * stride_sp + offs_n[None, None, :])
    s_mask = mp[None, :, None] & mn[None, None, :]
    state = tl.load(s_ptrs, mask=s_mask & keep[:, None, None], other=0.0).to(tl.float32)
    a_h = tl.load(a_ptr + heads).to(tl.float32)
    d_h = tl.load(d_ptr + heads).to(tl.float32)
    dtb = tl.load(dtb_ptr + heads).to(tl.float32)
    nw = tl.load(nw_ptr + cx, mask=mx, other=0.0).to(tl.float32)
    row = zx_ptr + b * stride_zx
    z = tl.load(row + cx, mask=mx, other=0.0).to(tl.float32)
    x_new = tl.load(row + HP + cx, mask=mx, other=0.0)
    dt = _softplus(tl.load(row + 2 * HP + 2 * N + heads).to(tl.float32) + dtb)  # [HB]
    cbias = tl.load(cb_ptr + cx, mask=mx, other=0.0).to(tl.float32)
    cw_new = tl.load(cw_ptr + cx * stride_cwc + (K - 1) * stride_cwk, mask=mx, other=0.0).to(tl.float32)
    base = conv_ptr + slot * stride_cs + cx
    # SYNC: at HB=1 the [1, P] tile is replicated across the program's threads
    pre = _conv_history(base, stride_ck, cw_ptr + cx * stride_cwc, stride_cwk, cbias, mx & keep[:, None], mx, mx, K,
                        True)
    tl.store(base + (K - 2) * stride_ck, x_new.to(conv_ptr.dtype.element_ty), mask=mx)
    xs = _silu(pre + x_new.to(tl.float32) * cw_new)  # [HB, BP]

    bs = tl.load(bc_ptr + b * stride_bc + offs_n, mask=mn, other=0.0)
    cs = tl.load(bc_ptr + b * stride_bc + N + offs_n, mask=mn, other=0.0)
    state, out = _ssm_out(state, dt, a_h, d_h, xs, bs, cs, z, nw, mx, eps, P)
    tl.store(s_ptrs, state.to(ssm_ptr.dtype.element_ty), mask=s_mask)
    tl.store(y_ptr + b * stride_y + cx, out.to(y_ptr.dtype.element_ty), mask=mx)


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
    _check(zxbcdt, conv_state, ssm_state, slots, reset, conv_weight, h, p, n)
    for name, t, size in (("conv_bias", conv_bias, h * p + 2 * n), ("dt_bias", dt_bias, h), ("A", A, h),
                          ("D", D, h), ("norm_weight", norm_weight, h * p)):
        if t.shape != (size,) or t.stride(0) != 1:
            raise ValueError(f"{name} must be a contiguous [{size}], got {tuple(t.shape)}")
    b, k, hp = zxbcdt.shape[0], conv_weight.shape[1], h * p
    nconv, nout = hp + 2 * n, zxbcdt.shape[1]
    if b == 0:
        return _alloc(0, hp, dtype=zxbcdt.dtype, device=zxbcdt.device)
    pdl, extra = launch_kwargs(zxbcdt.device)
    reset_u8 = (reset.view(torch.uint8) if reset.dtype == torch.bool else reset).contiguous()
    slots = slots.contiguous()
    act = _alloc(b, nout, dtype=torch.float32, device=zxbcdt.device)
    bm, bn, warps = _tiles(b, wide=True)
    _norm_in_kernel[(triton.cdiv(nout, bn), triton.cdiv(b, bm))](
        zxbcdt, zxbcdt.stride(0), zxbcdt, zxbcdt, 0, act, act.stride(0),
        conv_state, conv_state.stride(0), conv_state.stride(1), slots, reset_u8,
        conv_weight, conv_weight.stride(0), conv_weight.stride(1), conv_bias, dt_bias,
        b, 0.0,
        D=1, NOUT=nout, HP=hp, NCONV=nconv, K=k, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=16,
        IEEE=False, PDL=pdl, PROJ=False, num_warps=warps, **extra,
    )
    return ssm_step_triton(act, ssm_state, slots, reset_u8, A, D, norm_weight, h, p, n, eps, zxbcdt.dtype)


def _step_split_bc(
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
    _check(zxbcdt, conv_state, ssm_state, slots, reset, conv_weight, h, p, n)
    for name, t, size in (("conv_bias", conv_bias, h * p + 2 * n), ("dt_bias", dt_bias, h), ("A", A, h),
                          ("D", D, h), ("norm_weight", norm_weight, h * p)):
        if t.shape != (size,) or t.stride(0) != 1:
            raise ValueError(f"{name} must be a contiguous [{size}], got {tuple(t.shape)}")
    b, k, hp = zxbcdt.shape[0], conv_weight.shape[1], h * p
    y = _alloc(b, hp, dtype=zxbcdt.dtype, device=zxbcdt.device)
    if b == 0:
        return y
    reset_u8 = (reset.view(torch.uint8) if reset.dtype == torch.bool else reset).contiguous()
    slots = slots.contiguous()
    bc = _alloc(b, 2 * n, dtype=torch.float32, device=zxbcdt.device)
    block_c = triton.next_power_of_2(2 * n)
    block_m = max(1, min(16, 2048 // block_c))
    _bc_conv_kernel[(triton.cdiv(b, block_m),)](
        zxbcdt, zxbcdt.stride(0), conv_state, conv_state.stride(0), conv_state.stride(1), slots, reset_u8,
        conv_weight, conv_weight.stride(0), conv_weight.stride(1), conv_bias, bc, bc.stride(0), b,
        C0=hp, NC=2 * n, ZX0=hp, K=k, BLOCK_M=block_m, BLOCK_C=block_c, num_warps=4,
    )
    block_p, block_n = triton.next_power_of_2(p), triton.next_power_of_2(n)
    hb = _heads_per_program(h, block_p, block_n, ssm_state.element_size())
    _ssm_conv_kernel[(b * (h // hb),)](
        zxbcdt, zxbcdt.stride(0), bc, bc.stride(0), conv_state, conv_state.stride(0), conv_state.stride(1),
        ssm_state, ssm_state.stride(0), ssm_state.stride(1), ssm_state.stride(2), slots, reset_u8,
        conv_weight, conv_weight.stride(0), conv_weight.stride(1), conv_bias, dt_bias, A, D, norm_weight,
        y, y.stride(0), float(eps),
        H=h, P=p, N=n, K=k, HB=hb, BLOCK_P=block_p, BLOCK_N=block_n,
        num_warps=max(1, min(4, block_p * block_n // 1024)),
    )
    return y
