"""Fused Triton Mamba-2 layer step over slot-indexed states: one launch per layer per step.

`mamba2_step_triton` has the same signature and results as `ref.mamba2_step_ref`. One program
per (agent, group of HB heads) on a flat grid (batch on axis 0, so no 65,535 cap): it loads
everything it reads first (state tile first), shifts its heads' conv state, runs the depthwise
conv + SiLU for its x-channels and for the 2N B/C channels, dt + bias through softplus,
exp(dt*A), the fp32 state update, the C readout, the D skip, the z gate and the per-head gated
RMSNorm. HB = 1 for a float32 state, up to 4 for bfloat16. See README.md beside this file
(it also records the variants measured and dropped, e.g. one program per agent row).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _silu(v):
    return v * tl.sigmoid(v)


@triton.jit
def _softplus(v):
    # torch's softplus (threshold 20); log1p(e) via log(u) * e / (u - 1), exact where 1 + e rounds.
    e = tl.exp(tl.minimum(v, 20.0))
    u = 1.0 + e
    lp = tl.where(u == 1.0, e, tl.log(u) * (e / (u - 1.0)))
    return tl.where(v > 20.0, v, lp)


@triton.jit
def _mamba2_step_kernel(
    zx_ptr, stride_zx,
    conv_ptr, stride_cs, stride_ck,
    ssm_ptr, stride_ss, stride_sh, stride_sp,
    slots_ptr, stride_slot, reset_ptr, stride_reset, count_ptr,
    cw_ptr, stride_cwc, stride_cwk,
    cb_ptr, dtb_ptr, a_ptr, d_ptr, nw_ptr,
    out_ptr, stride_out,
    eps,
    H: tl.constexpr, P: tl.constexpr, N: tl.constexpr, K: tl.constexpr, HB: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, KB: tl.constexpr, STREAM: tl.constexpr,
):
    # One program per (agent, group of HB heads): G = H // HB programs per agent row.
    G: tl.constexpr = H // HB
    pid = tl.program_id(0)
    b = pid // G
    grp = pid % G
    b64 = b.to(tl.int64)
    slot = tl.load(slots_ptr + b64 * stride_slot).to(tl.int64)
    # A reset row's old state is masked out of every load, so it is never read.
    # (a [1] tensor rather than a scalar: the interpreter rejects scalar-and-tensor masks)
    keep = tl.load(reset_ptr + b64 * stride_reset + tl.zeros([1], tl.int32)) == 0
    keep2 = keep[:, None]  # [1, 1]
    keep3 = keep[:, None, None]  # [1, 1, 1]

    heads = grp * HB + tl.arange(0, HB)  # [HB] this program's heads
    offs_p = tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mp = offs_p < P
    mn = offs_n < N
    HP: tl.constexpr = H * P
    cx = heads[:, None] * P + offs_p[None, :]  # [HB, BLOCK_P] this program's x (and z) channels
    mx = mp[None, :] & (heads[:, None] < H)  # [HB, BLOCK_P]
    cbb = HP + offs_n  # B channels (shared by all heads)
    ccc = HP + N + offs_n  # C channels
    zx_row = zx_ptr + b64 * stride_zx
    conv_row = conv_ptr + slot * stride_cs

    # ---- loads: everything this program reads, before any store -------------------------------
    s_ptrs = (ssm_ptr + slot * stride_ss + heads[:, None, None] * stride_sh
              + offs_p[None, :, None] * stride_sp + offs_n[None, None, :])
    s_mask = mp[None, :, None] & mn[None, None, :]
    # STREAM: the state is touched once per step; evict it first so L2 keeps the shared rows.
    if STREAM:
        state = tl.load(s_ptrs, mask=s_mask & keep3, other=0.0, eviction_policy="evict_first")
    else:
        state = tl.load(s_ptrs, mask=s_mask & keep3, other=0.0)
    x_new = tl.load(zx_row + HP + cx, mask=mx, other=0.0).to(tl.float32)  # [HB, P]
    z = tl.load(zx_row + cx, mask=mx, other=0.0).to(tl.float32)  # [HB, P]
    dt = tl.load(zx_row + 2 * HP + 2 * N + heads).to(tl.float32)  # [HB]
    b_new = tl.load(zx_row + HP + cbb, mask=mn, other=0.0).to(tl.float32)  # [N]
    c_new = tl.load(zx_row + HP + ccc, mask=mn, other=0.0).to(tl.float32)  # [N]

    # Conv windows: row k < K-1 is old conv row k, row K-1 the new input. `sft_*` is the conv
    # state after this step (old rows 1..K-2, then the new input), loaded now so that no load
    # follows a store below. x channels as [KB, HB, P] tiles, B and C as [KB, N].
    k3 = tl.arange(0, KB)[:, None, None]
    k2 = tl.arange(0, KB)[:, None]
    win_x = tl.load(conv_row + k3 * stride_ck + cx[None, :, :], mask=(k3 < K - 1) & keep3 & mx[None, :, :], other=0.0)
    sft_x = tl.load(conv_row + (k3 + 1) * stride_ck + cx[None, :, :], mask=(k3 + 1 < K - 1) & keep3 & mx[None, :, :],
                    other=0.0)
    old_k = (k2 < K - 1) & keep2
    sft_k = (k2 + 1 < K - 1) & keep2
    win_b = tl.load(conv_row + k2 * stride_ck + cbb[None, :], mask=old_k & mn[None, :], other=0.0)
    win_c = tl.load(conv_row + k2 * stride_ck + ccc[None, :], mask=old_k & mn[None, :], other=0.0)
    sft_b = tl.load(conv_row + (k2 + 1) * stride_ck + cbb[None, :], mask=sft_k & mn[None, :], other=0.0)
    sft_c = tl.load(conv_row + (k2 + 1) * stride_ck + ccc[None, :], mask=sft_k & mn[None, :], other=0.0)
    w_x = tl.load(cw_ptr + cx[None, :, :] * stride_cwc + k3 * stride_cwk, mask=(k3 < K) & mx[None, :, :], other=0.0)
    w_b = tl.load(cw_ptr + cbb[None, :] * stride_cwc + k2 * stride_cwk, mask=(k2 < K) & mn[None, :], other=0.0)
    w_c = tl.load(cw_ptr + ccc[None, :] * stride_cwc + k2 * stride_cwk, mask=(k2 < K) & mn[None, :], other=0.0)
    bias_x = tl.load(cb_ptr + cx, mask=mx, other=0.0).to(tl.float32)
    bias_b = tl.load(cb_ptr + cbb, mask=mn, other=0.0).to(tl.float32)
    bias_c = tl.load(cb_ptr + ccc, mask=mn, other=0.0).to(tl.float32)
    dtb = tl.load(dtb_ptr + heads).to(tl.float32)
    a_h = tl.load(a_ptr + heads).to(tl.float32)
    d_h = tl.load(d_ptr + heads).to(tl.float32)
    nw = tl.load(nw_ptr + cx, mask=mx, other=0.0).to(tl.float32)

    win_x = tl.where(k3 == K - 1, x_new[None, :, :], win_x.to(tl.float32))  # [KB, HB, P]
    win_b = tl.where(k2 == K - 1, b_new[None, :], win_b.to(tl.float32))  # [KB, N]
    win_c = tl.where(k2 == K - 1, c_new[None, :], win_c.to(tl.float32))  # [KB, N]
    sft_x = tl.where(k3 == K - 2, x_new[None, :, :], sft_x.to(tl.float32))
    sft_b = tl.where(k2 == K - 2, b_new[None, :], sft_b.to(tl.float32))
    sft_c = tl.where(k2 == K - 2, c_new[None, :], sft_c.to(tl.float32))

    # ---- maths, all fp32 ----------------------------------------------------------------------
    xs = _silu(tl.sum(win_x * w_x.to(tl.float32), axis=0) + bias_x)  # [HB, P]
    bs = _silu(tl.sum(win_b * w_b.to(tl.float32), axis=0) + bias_b)  # [N]
    cs = _silu(tl.sum(win_c * w_c.to(tl.float32), axis=0) + bias_c)  # [N]
    dt = _softplus(dt + dtb)  # [HB]
    decay = tl.exp(dt * a_h)  # [HB]
    state = state.to(tl.float32) * decay[:, None, None] + (dt[:, None] * xs)[:, :, None] * bs[None, None, :]
    y = tl.sum(state * cs[None, None, :], axis=2) + d_h[:, None] * xs  # [HB, P]
    g = tl.where(mx, y * _silu(z), 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(g * g, axis=1) / P + eps)  # [HB]
    out = g * rstd[:, None] * nw

    # Replicated layouts mean another thread of this program may still be reading a conv
    # row that this thread is about to overwrite: finish all loads first.
    tl.debug_barrier()

    # The B/C conv rows are read by all G programs of this agent: only the last one to finish
    # its reads shifts them (a per-row arrival counter; it is left at 0 for the next launch).
    # The counter is bumped before this program's own stores, so its release waits on no store.
    if G > 1:
        arrived = tl.atomic_add(count_ptr + b, 1, sem="acq_rel")

    # ---- stores -------------------------------------------------------------------------------
    if STREAM:
        tl.store(s_ptrs, state.to(ssm_ptr.dtype.element_ty), mask=s_mask, eviction_policy="evict_first")
    else:
        tl.store(s_ptrs, state.to(ssm_ptr.dtype.element_ty), mask=s_mask)
    tl.store(out_ptr + b64 * stride_out + cx, out.to(out_ptr.dtype.element_ty), mask=mx)
    tl.store(conv_row + k3 * stride_ck + cx[None, :, :], sft_x.to(conv_ptr.dtype.element_ty),
             mask=(k3 < K - 1) & mx[None, :, :])

    if G == 1:
        _store_bc_rows(conv_row, stride_ck, k2, cbb, ccc, mn, sft_b, sft_c, K)
    elif arrived == G - 1:
        _store_bc_rows(conv_row, stride_ck, k2, cbb, ccc, mn, sft_b, sft_c, K)
        tl.atomic_xchg(count_ptr + b, 0, sem="relaxed")


@triton.jit
def _store_bc_rows(conv_row, stride_ck, offs_k, cbb, ccc, mn, sft_b, sft_c, K: tl.constexpr):
    st_k = offs_k < K - 1
    tl.store(conv_row + offs_k * stride_ck + cbb[None, :], sft_b.to(conv_row.dtype.element_ty), mask=st_k & mn[None, :])
    tl.store(conv_row + offs_k * stride_ck + ccc[None, :], sft_c.to(conv_row.dtype.element_ty), mask=st_k & mn[None, :])


def _alloc(*shape, dtype, device) -> torch.Tensor:
    """Fresh output buffers; tests replace this to fill them with NaN, so an unwritten element fails."""
    return torch.empty(*shape, dtype=dtype, device=device)


def _heads_per_program(h: int, p: int, n: int, state_bytes: int) -> int:
    """Default heads per program (measured on an H200, tests/bench/results/step-tune-h200-round*.json).

    float32 state: 1 (2 or 4 heads need more registers per program than they save: 1455 and
    1394 us against 1360 at B=16384). 16-bit state: the largest power of two dividing H, up to 4
    heads and 16384 state elements (810 us against 878 for 1 head).
    """
    if state_bytes >= 4:
        return 1
    hb = 1
    while h % (2 * hb) == 0 and 2 * hb <= 4 and 2 * hb * p * n <= 16384:
        hb *= 2
    return hb


# Per-row arrival counters, one buffer per device, kept at zero between launches. Old buffers are
# kept alive: a CUDA graph captured with one of them must never see its memory reused.
# Each kernel family has its own ("step", "mlp"), so two kernels never share a counter.
_COUNTERS: dict[tuple[torch.device, str], list[torch.Tensor]] = {}


def _counters(device: torch.device, rows: int, owner: str = "step") -> torch.Tensor:
    bufs = _COUNTERS.setdefault((device, owner), [])
    if not bufs or bufs[-1].numel() < rows:
        cap = max(rows, 1024, 2 * bufs[-1].numel() if bufs else 0)
        bufs.append(torch.zeros(cap, dtype=torch.int32, device=device))
    return bufs[-1]


def _check(zxbcdt, conv_state, ssm_state, slots, reset, conv_weight, conv_bias, dt_bias, A, D, norm_weight, h, p, n):
    """Every argument of a Triton step (`mamba2_step_triton`, `split.mamba2_step_split`) against
    the shapes `ref.mamba2_step_ref` takes; a ValueError names the first that does not fit."""
    b = zxbcdt.shape[0]
    cd = h * p + 2 * n
    if zxbcdt.dim() != 2 or zxbcdt.shape[1] != 2 * h * p + 2 * n + h or zxbcdt.stride(1) != 1:
        raise ValueError(f"zxbcdt must be [B, {2 * h * p + 2 * n + h}] with unit last stride, got {tuple(zxbcdt.shape)}")
    k = conv_weight.shape[1]
    if conv_weight.shape != (cd, k):
        raise ValueError(f"conv_weight must be [{cd}, K], got {tuple(conv_weight.shape)}")
    if conv_state.dim() != 3 or conv_state.shape[1:] != (k - 1, cd) or conv_state.stride(2) != 1:
        raise ValueError(f"conv_state must be [S, {k - 1}, {cd}] with unit last stride, got {tuple(conv_state.shape)}")
    if ssm_state.dim() != 4 or ssm_state.shape[1:] != (h, p, n) or ssm_state.stride(3) != 1:
        raise ValueError(f"ssm_state must be [S, {h}, {p}, {n}] with unit last stride, got {tuple(ssm_state.shape)}")
    if slots.shape != (b,) or reset.shape != (b,):
        raise ValueError(f"slots and reset must be [{b}], got {tuple(slots.shape)} and {tuple(reset.shape)}")
    for name, t in (("conv_state", conv_state), ("ssm_state", ssm_state), ("slots", slots), ("reset", reset)):
        if t.device != zxbcdt.device:
            raise ValueError(f"{name} is on {t.device}, zxbcdt on {zxbcdt.device}")
    for name, t, size in (("conv_bias", conv_bias, cd), ("dt_bias", dt_bias, h), ("A", A, h),
                          ("D", D, h), ("norm_weight", norm_weight, h * p)):
        if t.shape != (size,) or t.stride(0) != 1:
            raise ValueError(f"{name} must be a contiguous [{size}], got {tuple(t.shape)}")


def _launch(zxbcdt, conv_state, ssm_state, slots, reset, conv_weight, conv_bias, dt_bias, A, D, norm_weight,
            h: int, p: int, n: int, eps: float, *, heads_per_program: int | None = None,
            num_warps: int | None = None, stream_state: bool = False, max_regs: int | None = None):
    """Allocate y and launch the kernel on arguments `mamba2_step_triton` has validated.

    The keyword arguments are the launch variants tests/bench/tune_step.py compares; their
    defaults are the production launch (results in tests/bench/results/step-tune-h200-round*.json).

    Args:
        heads_per_program: HB, a power of two dividing H; None picks `_heads_per_program`.
        num_warps: warps per program; None: 4 for a 64 x 64 head tile, fewer for smaller tiles.
        stream_state: load and store the state tile evict-first (an H200 at HB=1: faster at
            B=1024, 82.5 against 89.4 us; slower at B=16384, 1420 against 1360 us).
        max_regs: ptxas registers per thread (`maxnreg`); None leaves it to the compiler.

    Returns:
        (y [B, H*P] in zxbcdt's dtype, the compiled kernel launched or None where nothing was:
        its `n_regs` and `n_spills` are what tune_step.py reports).
    """
    b = zxbcdt.shape[0]
    k = conv_weight.shape[1]
    out = _alloc(b, h * p, dtype=zxbcdt.dtype, device=zxbcdt.device)
    if b == 0:
        return out, None
    reset_u8 = reset.view(torch.uint8) if reset.dtype == torch.bool else reset
    block_p = triton.next_power_of_2(p)
    block_n = triton.next_power_of_2(n)
    hb = heads_per_program or _heads_per_program(h, block_p, block_n, ssm_state.element_size())
    if h % hb or hb & (hb - 1):
        raise ValueError(f"heads per program must be a power of two dividing n_heads={h}, got {hb}")
    # 4 warps for a 64 x 64 head tile whatever HB (8 or 16 were slower: fewer programs resident).
    num_warps = num_warps or max(1, min(4, block_p * block_n // 1024))
    kernel = _mamba2_step_kernel[(b * (h // hb),)](
        zxbcdt, zxbcdt.stride(0),
        conv_state, conv_state.stride(0), conv_state.stride(1),
        ssm_state, ssm_state.stride(0), ssm_state.stride(1), ssm_state.stride(2),
        slots, slots.stride(0), reset_u8, reset_u8.stride(0), _counters(zxbcdt.device, b),
        conv_weight, conv_weight.stride(0), conv_weight.stride(1),
        conv_bias, dt_bias, A, D, norm_weight,
        out, out.stride(0),
        float(eps),
        H=h, P=p, N=n, K=k, HB=hb,
        BLOCK_P=block_p, BLOCK_N=block_n, KB=triton.next_power_of_2(k),
        STREAM=bool(stream_state),
        num_warps=num_warps,
        **({"maxnreg": max_regs} if max_regs else {}),
    )
    return out, kernel


def mamba2_step_triton(
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
    """Advance the agents in `slots` by one step, in place: one Triton launch.

    Same contract as `worldssm.kernels.step.ref.mamba2_step_ref` (see it for the arguments).
    States may be float32 or bfloat16 storage (conv and SSM independently); arithmetic is float32.
    Slots must be distinct. No host synchronisation: safe to capture in a CUDA graph.

    Returns:
        y [B, H*P] in zxbcdt's dtype, ready for the out-projection.
    """
    h, p, n = int(n_heads), int(head_dim), int(d_state)
    _check(zxbcdt, conv_state, ssm_state, slots, reset, conv_weight, conv_bias, dt_bias, A, D, norm_weight, h, p, n)
    out, _ = _launch(zxbcdt, conv_state, ssm_state, slots, reset, conv_weight, conv_bias, dt_bias, A, D,
                     norm_weight, h, p, n, eps)
    return out
