"""The Mamba-2 layer step fused around its projections: three Triton launches per layer, with PDL.

`mamba2_layer_step_triton` advances one pre-norm residual layer (RMSNorm -> in-projection ->
conv -> SSM -> gated norm -> out-projection -> residual add) for B slot-indexed agents, with the
same results as the reference path (`Mamba2Mixer.step_slots` after `RMSNorm`). Per layer:

1. `_norm_in_kernel`, one program per (row block, column block) of the in-projection: the
   RMSNorm of the residual rows (prologue), the GEMM tile, then per column whatever needs only
   that column: the depthwise conv + SiLU of the x, B and C channels, shifting their conv-state
   rows in place (each (agent, channel) belongs to exactly one program, so no counter and no
   race between programs), softplus(dt + bias) on the dt columns, z passed through. Writes one
   float32 activation row [z | x | B | C | dt] per agent.
2. `_ssm_kernel`, one program per (agent, HB heads): reads its state tile, updates it, C
   readout, D skip, z gate, the per-head gated RMSNorm. It touches no other part of the slab,
   so at large B it is a pure streaming pass over the state.
3. `_out_res_kernel`: the out-projection GEMM with the residual add in its epilogue.

The final RMSNorm of the stack is `norm.add_rmsnorm_triton`.

Every kernel is launched with programmatic dependent launch where the GPU has it (`pdl.py`): it
loads what the previous kernel does not write (weights, conv rows, the state tile) before it
waits. The early loads are safe because a kernel starts only once every kernel before its
predecessor has finished: the state tile `_ssm_kernel` reads was last written at least two
launches earlier, and the conv rows `_norm_in_kernel` reads at least three.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from worldssm.kernels.step.pdl import launch_kwargs, pdl_wait
from worldssm.kernels.step.triton import _heads_per_program, _silu, _softplus


@triton.jit
def _mm(a, b, IEEE: tl.constexpr):
    """a [M, K] @ b [K, N] as float32 by `tl.dot` (IEEE: float32 operands, exact products)."""
    if IEEE:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b.to(a.dtype))


@triton.jit
def _rms_in_proj(s, nw, w, eps, D: tl.constexpr, IEEE: tl.constexpr):
    """The in-projection [BM, BN] (float32) of residual rows s [BM, BLOCK_D] (stream dtype) by the
    weight tile w [BLOCK_D, BN], after the RMSNorm with weight nw; rounded as the model's RMSNorm
    and F.linear round: the normed row to the stream dtype before and after the weight, the product
    to the stream dtype."""
    sf = s.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(sf * sf, axis=1) / D + eps)
    h = (sf * rstd[:, None]).to(s.dtype).to(tl.float32)
    h = (h * nw.to(s.dtype).to(tl.float32)[None, :]).to(s.dtype)
    return _mm(h, w, IEEE).to(s.dtype).to(tl.float32)


@triton.jit
def _conv_history(base, stride_ck, cw_ptr, stride_cwk, cbias, m_read, m_write, m_cw, K: tl.constexpr):
    """The depthwise conv over the K-1 stored rows, cbias + sum_k row_k * weight_k, as float32 of
    base's shape; each row is loaded as one 2-D tile in turn (a [K-1, BM, BN] tile reduced over its
    first axis goes through shared memory, 5 us of bank conflicts per 16 x 128 tile on an H100).

    base: 2-D pointers to each cell's conv row 0 (rows `stride_ck` apart), read where m_read
    (else 0: a reset row); cw_ptr: pointers to each channel's weight 0 (`stride_cwk` apart), read
    where m_cw, and cbias, both broadcastable to base (a [1, BN] row for [BM, BN] cells). As it goes
    it shifts the rows down one (row k-1 <- row k) where m_write, and the caller stores this step's
    input as row K-2. Each cell is loaded and stored by the one thread that holds it, so no other
    thread reads a row this one overwrites; that needs a tile with at least as many cells as the
    program has threads. A smaller tile is replicated across threads (a [1, 64] tile over 128):
    one copy may store row k-1 before another has loaded it, a race the interpreter cannot show
    and that gave wrong states on an H100 (a dropped design of `split.py`)."""
    pre = tl.zeros(base.shape, tl.float32) + cbias
    for k in tl.static_range(K - 1):
        row = tl.load(base + k * stride_ck, mask=m_read, other=0.0)
        wk = tl.load(cw_ptr + k * stride_cwk, mask=m_cw, other=0.0).to(tl.float32)
        pre += row.to(tl.float32) * wk
        if k >= 1:
            tl.store(base + (k - 1) * stride_ck, row, mask=m_write)
    return pre


@triton.jit
def _conv_act(v, pre, cw_new, dtb, is_conv, is_dt):
    """The activations [BM, BN] of the in-projection tile v [BM, BN], per column: SiLU of the
    depthwise conv (x, B, C columns; pre from `_conv_history`, cw_new the weight of this step's
    input), softplus(v + dt_bias) (dt columns), v as is (z)."""
    out = tl.where(is_conv[None, :], _silu(pre + v * cw_new[None, :]), v)
    return tl.where(is_dt[None, :], _softplus(v + dtb[None, :]), out)


@triton.jit
def _norm_in_kernel(
    s_ptr, stride_s, nw_ptr, w_ptr, stride_wn, act_ptr, stride_act,
    conv_ptr, stride_cs, stride_ck, slots_ptr, reset_ptr,
    cw_ptr, stride_cwc, stride_cwk, cb_ptr, dtb_ptr,
    rows, eps,
    D: tl.constexpr, NOUT: tl.constexpr, HP: tl.constexpr, NCONV: tl.constexpr, K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    IEEE: tl.constexpr, PDL: tl.constexpr, PROJ: tl.constexpr, COL0: tl.constexpr,
):
    # PROJ: s_ptr holds residual rows [B, D], normed and projected here; else it holds the
    # in-projection rows [B, NOUT] already (cuBLAS on the split path) and w_ptr, nw_ptr are unused.
    # COL0: the first column this launch covers (HP on the split path: the state kernel reads z
    # from cuBLAS's rows itself, so its columns of act are neither read nor written here).
    cols = COL0 + tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN] in-projection columns
    r = tl.program_id(1).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM] batch rows
    offs_d = tl.arange(0, BLOCK_D)
    mc = cols < NOUT
    mr = r < rows
    md = offs_d < D
    c = cols - HP  # conv channel of each column (x, then B, then C)
    is_conv = (c >= 0) & (c < NCONV)
    is_dt = mc & (cols >= HP + NCONV)

    # ---- before the wait: nothing here is written by the previous kernel ----------------------
    if PROJ:
        w = tl.load(w_ptr + cols[None, :] * stride_wn + offs_d[:, None], mask=md[:, None] & mc[None, :], other=0.0)
        nw = tl.load(nw_ptr + offs_d, mask=md, other=0.0)
    cw_new = tl.load(cw_ptr + c * stride_cwc + (K - 1) * stride_cwk, mask=is_conv, other=0.0).to(tl.float32)
    cbias = tl.load(cb_ptr + c, mask=is_conv, other=0.0).to(tl.float32)
    dtb = tl.load(dtb_ptr + (cols - HP - NCONV), mask=is_dt, other=0.0).to(tl.float32)
    slot = tl.load(slots_ptr + r, mask=mr, other=0).to(tl.int64)  # [BM]
    keep = mr & (tl.load(reset_ptr + r, mask=mr, other=1) == 0)  # [BM]: a reset row's conv rows are not read
    # The conv rows of this program's cells (only this program reads or writes them, and the
    # kernel before this one in the stream does not touch them): the old rows' share of the conv,
    # and the shift by one row, before the wait.
    base = conv_ptr + slot[:, None] * stride_cs + c[None, :]
    m_own = mr[:, None] & is_conv[None, :]
    pre = _conv_history(base, stride_ck, (cw_ptr + c * stride_cwc)[None, :], stride_cwk, cbias[None, :],
                        keep[:, None] & is_conv[None, :], m_own, is_conv[None, :], K)

    pdl_wait(PDL)

    if PROJ:
        s = tl.load(s_ptr + r[:, None] * stride_s + offs_d[None, :], mask=mr[:, None] & md[None, :], other=0.0)
        v = _rms_in_proj(s, nw, w, eps, D, IEEE)
    else:
        v = tl.load(s_ptr + r[:, None] * stride_s + cols[None, :], mask=mr[:, None] & mc[None, :], other=0.0)
        v = v.to(tl.float32)
    out = _conv_act(v, pre, cw_new, dtb, is_conv, is_dt)
    tl.store(act_ptr + r[:, None] * stride_act + cols[None, :], out, mask=mr[:, None] & mc[None, :])
    tl.store(base + (K - 2) * stride_ck, v.to(conv_ptr.dtype.element_ty), mask=m_own)


@triton.jit
def _ssm_kernel(
    act_ptr, stride_act, z_ptr, stride_z, ssm_ptr, stride_ss, stride_sh, stride_sp, slots_ptr, reset_ptr,
    a_ptr, d_ptr, nw_ptr, y_ptr, stride_y, eps,
    H: tl.constexpr, P: tl.constexpr, N: tl.constexpr, HB: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, PDL: tl.constexpr,
):
    G: tl.constexpr = H // HB
    pid = tl.program_id(0)
    b = (pid // G).to(tl.int64)
    heads = (pid % G) * HB + tl.arange(0, HB)  # [HB]
    offs_p = tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mp = offs_p < P
    mn = offs_n < N
    HP: tl.constexpr = H * P
    cx = heads[:, None] * P + offs_p[None, :]  # [HB, BP]
    mx = mp[None, :] & (heads[:, None] < H)

    # ---- before the wait: the state tile (last written two or more launches ago) and weights --
    slot = tl.load(slots_ptr + b).to(tl.int64)
    keep = tl.load(reset_ptr + b + tl.zeros([1], tl.int32)) == 0  # [1]
    s_ptrs = (ssm_ptr + slot * stride_ss + heads[:, None, None] * stride_sh
              + offs_p[None, :, None] * stride_sp + offs_n[None, None, :])
    s_mask = mp[None, :, None] & mn[None, None, :]
    state = tl.load(s_ptrs, mask=s_mask & keep[:, None, None], other=0.0).to(tl.float32)
    a_h = tl.load(a_ptr + heads).to(tl.float32)
    d_h = tl.load(d_ptr + heads).to(tl.float32)
    nw = tl.load(nw_ptr + cx, mask=mx, other=0.0).to(tl.float32)

    pdl_wait(PDL)

    row = act_ptr + b * stride_act
    z = tl.load(z_ptr + b * stride_z + cx, mask=mx, other=0.0).to(tl.float32)
    xs = tl.load(row + HP + cx, mask=mx, other=0.0)
    bs = tl.load(row + 2 * HP + offs_n, mask=mn, other=0.0)
    cs = tl.load(row + 2 * HP + N + offs_n, mask=mn, other=0.0)
    dt = tl.load(row + 2 * HP + 2 * N + heads)  # softplus(dt + bias), from the in-projection

    decay = tl.exp(dt * a_h)
    state = state * decay[:, None, None] + (dt[:, None] * xs)[:, :, None] * bs[None, None, :]
    tl.store(s_ptrs, state.to(ssm_ptr.dtype.element_ty), mask=s_mask)
    y = tl.sum(state * cs[None, None, :], axis=2) + d_h[:, None] * xs
    g = tl.where(mx, y * _silu(z), 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(g * g, axis=1) / P + eps)
    tl.store(y_ptr + b * stride_y + cx, (g * rstd[:, None] * nw).to(y_ptr.dtype.element_ty), mask=mx)


@triton.jit
def _out_res_kernel(
    y_ptr, stride_y, w_ptr, stride_wn, res_ptr, stride_res, out_ptr, stride_out, rows,
    KD: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr, PDL: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    r = tl.program_id(1).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mc = cols < D
    mr = r < rows
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if BLOCK_K >= KD:  # the whole weight tile fits one pass: load it before the wait
        w = tl.load(w_ptr + cols[None, :] * stride_wn + offs_k[:, None], mask=(offs_k[:, None] < KD) & mc[None, :],
                    other=0.0)
        pdl_wait(PDL)
        y = tl.load(y_ptr + r[:, None] * stride_y + offs_k[None, :], mask=mr[:, None] & (offs_k[None, :] < KD),
                    other=0.0)
        if IEEE:
            acc = tl.dot(y.to(tl.float32), w.to(tl.float32), input_precision="ieee")
        else:
            acc = tl.dot(y, w.to(y.dtype))
    else:
        pdl_wait(PDL)
        for k0 in range(0, KD, BLOCK_K):
            kk = k0 + offs_k
            w = tl.load(w_ptr + cols[None, :] * stride_wn + kk[:, None], mask=(kk[:, None] < KD) & mc[None, :],
                        other=0.0)
            y = tl.load(y_ptr + r[:, None] * stride_y + kk[None, :], mask=mr[:, None] & (kk[None, :] < KD), other=0.0)
            if IEEE:
                acc = tl.dot(y.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(y, w.to(y.dtype), acc)
    m = mr[:, None] & mc[None, :]
    res = tl.load(res_ptr + r[:, None] * stride_res + cols[None, :], mask=m, other=0.0)
    delta = acc.to(res_ptr.dtype.element_ty).to(tl.float32)  # F.linear's output, rounded
    tl.store(out_ptr + r[:, None] * stride_out + cols[None, :], (res.to(tl.float32) + delta).to(out_ptr.dtype.element_ty),
             mask=m)


STEP_PATHS = ("auto", "v1", "split", "layer", "mega")
DEFAULT_STEP_PATH = "auto"
# "auto" takes the layer path up to this batch and the split path above it. Measured (`worldssm
# bench step`, BASE; one call per card, tests/bench/results/experiments/step-split.json): the layer path wins
# where launches and its fused projections pay (H200: B=64 50.3 us against v1's 64.9, B=256 127.5
# against 145.3, B=1,024 392.7 against 412.1; H100: 1,024 482.9 against 499.2); at 16,384 its
# Triton in-projection (245 us a layer on the H200) makes it even with v1 (5,631 against 5,681;
# H100 7,197 against 7,158). The split path (`split.py`: cuBLAS in-projection, then the layer
# path's conv and state kernels) is faster there: H100, 16,384 agents, 7,052 us against v1's
# 7,164 and the layer path's 7,191 (whole world-model step 8,935 against 9,056), and still
# behind the layer path at 1,024 (486.1 against 481.9; step-nvidia-h100-80gb-hbm3-b1024-b16384.json).
LAYER_MAX_BATCH = 1024
# The one-launch backbone step (`mega.py`, WORLDSSM_STEP_PATH=mega) serves batches up to one row
# block of its programs. Opt-in: correct on the H100 but slower than the layer path (35.6 against
# 24.5 us at B=1, 61.9 against 31.6 at B=16; tests/bench/results/experiments/
# mega-first-gpu-runs-h100.json). "auto" should take it where `bench step --mega` shows it faster.
MEGA_MAX_BATCH = 16


def step_path() -> str:
    """The model's Triton step path as configured: "auto" (the default: `backbone_path` picks by
    batch), "layer" (this module for every batch, and the fused whole world-model step at every
    batch whatever WORLDSSM_TF32 says), "mega"
    (the one-launch backbone step of `mega.py` up to MEGA_MAX_BATCH agents, the layer path above),
    "v1" (add+RMSNorm, cuBLAS projections, `mamba2_step_triton`) or "split" (the same around
    `split.mamba2_step_split`: two launches, no row counter). WORLDSSM_STEP_PATH picks one."""
    path = os.environ.get("WORLDSSM_STEP_PATH", DEFAULT_STEP_PATH)
    if path not in STEP_PATHS:
        raise ValueError(f"WORLDSSM_STEP_PATH must be one of {STEP_PATHS}, got {path!r}")
    return path


def backbone_path(batch: int) -> str:
    """"mega", "layer", "split" or "v1": the backbone's path for a step of `batch` agents (one code path
    per batch bucket; each is checked against the reference by the tests and by `worldssm bench
    step`). "mega" still takes the layer path where the model's grid does not fit the GPU
    (`Mamba2Backbone.residual_fused`)."""
    path = step_path()
    if path == "auto":
        return "layer" if batch <= LAYER_MAX_BATCH else "split"
    if path == "mega":
        return "mega" if batch <= MEGA_MAX_BATCH else "layer"
    return path


def _alloc(*shape, dtype, device) -> torch.Tensor:
    """Fresh output buffers; tests replace this to fill them with NaN, so an unwritten element fails."""
    return torch.empty(*shape, dtype=dtype, device=device)


# The largest batch of each of `_tiles`' first three tiers (tests lower them, so that the
# interpreter reaches every tier with few rows).
TILE_ROWS = (16, 64, 256)


def _tiles(rows: int, wide: bool) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) of a projection by batch: at small B, narrow column tiles
    spread the weight bytes over many SMs; at large B, bigger tiles. `wide`: the in-projection,
    which also holds two [K-1, BLOCK_M, BLOCK_N] conv tiles, so it takes fewer rows and more warps."""
    few, some, many = TILE_ROWS
    if rows <= few:
        return 16, (32 if wide else 16), 4
    if rows <= some:  # 16 x 16 tiles for both: 57.8 us per BASE step at 64 agents against 82.6 with 32 x 32 (H100)
        return 16, 16, 4
    if rows <= many:  # 127.5 us at 256 against 139.9 with 32 x 32 (H200)
        return 16, 32, 4
    return (32, 64, 8) if wide else (64, 64, 8)


def ssm_step_triton(act, ssm_state, slots, reset_u8, A, D, gate_norm_weight, h: int, p: int, n: int, eps: float,
                    out_dtype: torch.dtype, z: torch.Tensor | None = None) -> torch.Tensor:
    """The state-update launch alone, on the in-projection kernel's activations.

    Args:
        act: float32 [B, 2*H*P + 2*N + H] rows [z | conv'd x | conv'd B | conv'd C | softplus dt].
        z: where the gate z is read instead of act's first H*P columns (any float dtype, rows
            [B, >= H*P] with unit column stride): the split path's cuBLAS output.
        ssm_state: slab [S, H, P, N] (float32, or bfloat16 storage); rows `slots` advance in place.
        slots: int64 [B]; reset_u8: uint8 [B] (1 zeroes the row's state first, without reading it).
        A, D: [H]; gate_norm_weight: [H*P]; eps: the gated norm's epsilon.

    Returns:
        y [B, H*P] in out_dtype, the gated-normed output for the out-projection.
    """
    b = act.shape[0]
    y = _alloc(b, h * p, dtype=out_dtype, device=act.device)
    if b == 0:
        return y
    pdl, extra = launch_kwargs(act.device)
    block_p, block_n = triton.next_power_of_2(p), triton.next_power_of_2(n)
    hb = _heads_per_program(h, block_p, block_n, ssm_state.element_size())  # the v1 kernel's measured rule
    z = act if z is None else z
    _ssm_kernel[(b * (h // hb),)](
        act, act.stride(0), z, z.stride(0), ssm_state, ssm_state.stride(0), ssm_state.stride(1), ssm_state.stride(2),
        slots, reset_u8, A, D, gate_norm_weight, y, y.stride(0), float(eps),
        H=h, P=p, N=n, HB=hb, BLOCK_P=block_p, BLOCK_N=block_n, PDL=pdl,
        num_warps=max(1, min(4, block_p * block_n // 1024)), **extra,
    )
    return y


def mamba2_layer_step_triton(
    res: torch.Tensor,
    norm_weight: torch.Tensor,
    in_weight: torch.Tensor,
    conv_state: torch.Tensor,
    ssm_state: torch.Tensor,
    slots: torch.Tensor,
    reset: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor,
    dt_bias: torch.Tensor,
    A: torch.Tensor,
    D: torch.Tensor,
    gate_norm_weight: torch.Tensor,
    out_weight: torch.Tensor,
    n_heads: int,
    head_dim: int,
    d_state: int,
    eps: float = 1e-5,
    norm_eps: float = 1e-5,
) -> torch.Tensor:
    """One residual Mamba-2 layer for the agents in `slots`, states advanced in place: three launches.

    Args:
        res: residual stream [B, Dm] (float32 or bfloat16, unit last stride); not modified.
        norm_weight: the layer's pre-norm weight [Dm]; norm_eps its epsilon.
        in_weight: in-projection [2*H*P + 2*N + H, Dm]; out_weight: out-projection [Dm, H*P].
        conv_state, ssm_state, slots, reset, conv_weight, conv_bias, dt_bias, A, D: as in
            `worldssm.kernels.step.ref.mamba2_step_ref`; gate_norm_weight is its norm_weight.
        n_heads, head_dim, d_state: H, P, N. eps: the gated norm's epsilon.

    Returns:
        The new residual stream res + out_proj(mixer(rmsnorm(res))) [B, Dm] in res's dtype.
    """
    h, p, n = int(n_heads), int(head_dim), int(d_state)
    if res.dim() != 2 or res.stride(1) != 1:
        raise ValueError(f"res must be [B, D] with unit last stride, got {tuple(res.shape)}")
    b, dm = res.shape
    hp, k = h * p, conv_weight.shape[1]
    nconv, nout = hp + 2 * n, 2 * hp + 2 * n + h
    if in_weight.shape != (nout, dm) or out_weight.shape != (dm, hp) or norm_weight.shape != (dm,):
        raise ValueError(f"weights must be in [{nout}, {dm}], out [{dm}, {hp}], norm [{dm}]; got "
                         f"{tuple(in_weight.shape)}, {tuple(out_weight.shape)}, {tuple(norm_weight.shape)}")
    if in_weight.stride(1) != 1 or out_weight.stride(1) != 1:
        raise ValueError("in_weight and out_weight need a unit last stride")
    if conv_state.shape[1:] != (k - 1, nconv) or conv_state.stride(2) != 1:
        raise ValueError(f"conv_state must be [S, {k - 1}, {nconv}] with unit last stride, got {tuple(conv_state.shape)}")
    if ssm_state.shape[1:] != (h, p, n) or ssm_state.stride(3) != 1:
        raise ValueError(f"ssm_state must be [S, {h}, {p}, {n}] with unit last stride, got {tuple(ssm_state.shape)}")
    if slots.shape != (b,) or reset.shape != (b,):
        raise ValueError(f"slots and reset must be [{b}], got {tuple(slots.shape)} and {tuple(reset.shape)}")
    out = _alloc(b, dm, dtype=res.dtype, device=res.device)
    if b == 0:
        return out
    pdl, extra = launch_kwargs(res.device)
    # Products in float32 (exact for bfloat16 operands) for a float32 stream, and in the
    # interpreter, whose bfloat16 dot is wrong (Triton 3.9); bfloat16 tensor-core dots on a GPU.
    ieee = res.dtype == torch.float32 or res.device.type != "cuda"
    reset_u8 = reset.view(torch.uint8) if reset.dtype == torch.bool else reset
    slots = slots.contiguous()
    reset_u8 = reset_u8.contiguous()

    act = _alloc(b, nout, dtype=torch.float32, device=res.device)
    bm, bn, warps = _tiles(b, wide=True)
    _norm_in_kernel[(triton.cdiv(nout, bn), triton.cdiv(b, bm))](
        res, res.stride(0), norm_weight, in_weight, in_weight.stride(0), act, act.stride(0),
        conv_state, conv_state.stride(0), conv_state.stride(1), slots, reset_u8,
        conv_weight, conv_weight.stride(0), conv_weight.stride(1), conv_bias, dt_bias,
        b, float(norm_eps),
        D=dm, NOUT=nout, HP=hp, NCONV=nconv, K=k,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=max(16, triton.next_power_of_2(dm)),
        IEEE=ieee, PDL=pdl, PROJ=True, COL0=0, num_warps=warps, **extra,
    )

    y = ssm_step_triton(act, ssm_state, slots, reset_u8, A, D, gate_norm_weight, h, p, n, eps, res.dtype)

    bm, bn, warps = _tiles(b, wide=False)
    block_k = max(16, triton.next_power_of_2(hp))
    if b > 16:
        block_k = min(block_k, 64)
    _out_res_kernel[(triton.cdiv(dm, bn), triton.cdiv(b, bm))](
        y, y.stride(0), out_weight, out_weight.stride(0), res, res.stride(0), out, out.stride(0), b,
        KD=hp, D=dm, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=block_k, IEEE=ieee, PDL=pdl, num_warps=warps, **extra,
    )
    return out
