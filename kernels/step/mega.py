"""The whole Mamba-2 backbone step for a few agents in one launch, its programs ordered by flags.

At one agent the layer path (`layer.py`) is 12 launches for BASE's 4 layers, each about 2 us of
launch, fill and drain around well under a microsecond of work. `mamba2_backbone_step_mega` runs
the same arithmetic as one persistent launch: every program keeps one role for all layers, and a
program waits only for the programs whose results it reads (per-dependency counters in global
memory, not grid-wide barriers).

For each block of `MEGA_ROWS` agents (rows) there are R = S + H * NG + T programs:

- S *shared* programs: the in-projection columns every head reads (B, C, dt), with the layer's
  RMSNorm in the prologue and the depthwise conv + SiLU (B, C) or softplus (dt) in the epilogue.
  They own the B and C channels' conv rows, write [B | C | dt] rows to a scratch buffer, then
  bump the layer's `shared` counter.
- H * NG *head* programs, one per (head, group of `GROUP_ROWS` rows): the head's z and x columns
  (the whole row block through one `tl.dot`; its own rows' x conv rows shifted in place), kept in
  registers; then they wait for the shared counter to reach S, read B, C and dt back and advance
  their rows' state tiles (decay, update, C readout, D skip, gate, per-head norm), write y and
  bump the layer's `heads` counter.
- T *out* programs, one per column tile of the residual: wait for `heads` = H * NG, multiply y by
  their out-projection tile, add the residual and bump the layer's `out` counter. The next
  layer's shared and head programs wait for `out` = T before they read the new residual row.

Each program loads its next weights before it waits, so weight traffic overlaps the wait. The
residual is updated in place in the output buffer: every reader of a layer's residual has
signalled before any out program of that layer writes (out waits for heads, which wait for
shared, and each of those read the row first). A signal is a CTA barrier and then a release
atomic; a wait spins on an acquire atomic, and everything another program wrote is read with
`.cg` (from L2, never a stale L1 line). The last program of a row block to finish (a `done`
counter, acq_rel) zeroes that block's counters, so the next launch starts from zero; nothing is
synchronised by the host, and the launch is CUDA-graph capturable.

A program that waits must never keep the programs it waits for from running: the grid is at most
one program per SM (checked), so every program is resident at once on an otherwise idle GPU
(MPS, green contexts or a persistent kernel on another stream could still hold SMs back). The
counters are one buffer per device: two of these launches must not run at once on two streams. The Triton interpreter runs
programs one after another, in program order; there the launcher runs one launch per layer, and
within a layer every program waits only for programs before it (shared, then heads, then out).

All state reads come after the PDL wait (the previous launch may be this same kernel, one step
earlier, still writing the states); only weights are loaded before it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from worldssm.kernels.step.pdl import launch_kwargs, pdl_wait
from worldssm.kernels.step import layer as _layer
from worldssm.kernels.step.layer import _conv_act, _conv_history, _mm, _rms_in_proj
from worldssm.kernels.step.triton import _counters, _silu

MEGA_ROWS = 16  # rows per row block: `tl.dot`'s smallest M
GROUP_ROWS = 4  # rows whose states one head program advances
OUT_COLS = 32  # residual columns per out program
MEGA_WARPS = 8  # warps per program (4 measured slower on the H100: 60.5 against 54.5 us at one agent)


class MegaLayer(NamedTuple):
    """One layer's tensors, as `layer.mamba2_layer_step_triton` takes them."""

    norm_weight: torch.Tensor  # [Dm]
    in_weight: torch.Tensor  # [2*H*P + 2*N + H, Dm]
    conv_weight: torch.Tensor  # [H*P + 2*N, K]
    conv_bias: torch.Tensor  # [H*P + 2*N]
    dt_bias: torch.Tensor  # [H]
    A: torch.Tensor  # [H], -exp(A_log)
    D: torch.Tensor  # [H]
    gate_norm_weight: torch.Tensor  # [H*P]
    out_weight: torch.Tensor  # [Dm, H*P]
    conv_state: torch.Tensor  # slab [S, K-1, H*P + 2*N]
    ssm_state: torch.Tensor  # slab [S, H, P, N]


@triton.jit
def _wait(flag_ptr, target):
    n = tl.atomic_add(flag_ptr, 0, sem="acquire")
    while n < target:
        n = tl.atomic_add(flag_ptr, 0, sem="acquire")


@triton.jit
def _signal(flag_ptr):
    tl.debug_barrier()  # every thread's stores happen before the release
    tl.atomic_add(flag_ptr, 1, sem="release")


@triton.jit
def _stamp(trace_ptr, pid, l, e, L: tl.constexpr, TRACE: tl.constexpr):
    """With TRACE, write %globaltimer (ns, one clock for every SM) as event `e` of layer `l` of
    program `pid` (8 slots per layer): 0 the layer begins, 1 the first wait returns, 2 the
    second wait returns (head programs), 3 the signal is sent; 4-7 inside a phase (`_stamp_after`)."""
    if TRACE:
        t = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False, pack=1)
        tl.store(trace_ptr + (pid * L + l) * 8 + e, t)


@triton.jit
def _stamp_after(trace_ptr, pid, l, e, dep, L: tl.constexpr, TRACE: tl.constexpr):
    """`_stamp` once the tile `dep` is computed (its sum feeds the timer read)."""
    if TRACE:
        d = tl.sum(tl.reshape(dep.to(tl.float32), [dep.numel]), axis=0).to(tl.int32, bitcast=True)
        t = tl.inline_asm_elementwise("mov.u64 $0, %globaltimer; // $1", "=l,r", [d], dtype=tl.int64, is_pure=False,
                                      pack=1)
        tl.store(trace_ptr + (pid * L + l) * 8 + e, t)


@triton.jit
def _row(v, loc, m):
    """Row m of the register tile v [BM, X], as [X]."""
    return tl.sum(tl.where(loc[:, None] == m, v, 0.0), axis=0)


@triton.jit
def _mega_kernel(
    x_ptr, out_ptr, stride_x, act_ptr, stride_act, y_ptr, stride_y, flags_ptr, slots_ptr, reset_ptr,
    norm_ws, in_ws, conv_ws, conv_bs, dt_bs, a_s, d_s, gnorm_ws, out_ws, conv_sts, ssm_sts,
    stride_wn, stride_cwc, stride_cwk, stride_wo, stride_cs, stride_ck, stride_ss, stride_sh, stride_sp,
    rows, l0, l1, eps, norm_eps, trace_ptr,
    L: tl.constexpr, D: tl.constexpr, H: tl.constexpr, P: tl.constexpr, N: tl.constexpr, K: tl.constexpr,
    BM: tl.constexpr, G: tl.constexpr, NG: tl.constexpr, S: tl.constexpr, T: tl.constexpr,
    BLOCK_D: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr, BO: tl.constexpr, BK: tl.constexpr,
    FB: tl.constexpr, IEEE: tl.constexpr, PDL: tl.constexpr, TRACE: tl.constexpr,
):
    R: tl.constexpr = S + H * NG + T
    HP: tl.constexpr = H * P
    NCONV: tl.constexpr = HP + 2 * N
    NOUT: tl.constexpr = 2 * HP + 2 * N + H
    W: tl.constexpr = 2 * BP  # in-projection columns per program
    pid = tl.program_id(0)
    rb = pid // R
    role = pid % R
    loc = tl.arange(0, BM)
    r = rb.to(tl.int64) * BM + loc
    mr = r < rows
    offs_d = tl.arange(0, BLOCK_D)
    md = offs_d < D
    fl = flags_ptr + rb * (3 * L + 1)  # this row block's counters: (shared, heads, out) per layer, done
    j = tl.arange(0, W)
    is_in = role < S + H * NG
    # The in-projection columns of this program: shared programs a slice of [B | C | dt], head
    # programs [z_h | x_h] (each half BP wide, P used).
    q = tl.maximum(role - S, 0)
    hd = q // NG
    g = q % NG
    if role < S:
        cols = 2 * HP + role * W + j
        mc = cols < NOUT
        own = mr
    else:
        pj = j % BP
        cols = (j // BP) * HP + hd * P + pj
        mc = pj < P
        own = mr & (loc // G == g)
    c = cols - HP  # conv channel (x, then B, then C)
    is_conv = mc & (c >= 0) & (c < NCONV)
    is_dt = mc & (cols >= HP + NCONV)
    offs_p = tl.arange(0, BP)
    mp = offs_p < P
    offs_n = tl.arange(0, BN)
    mn = offs_n < N
    s_mask = mp[:, None] & mn[None, :]
    ocols = (role - S - H * NG) * BO + tl.arange(0, BO)
    mo = ocols < D
    kk = tl.arange(0, BK)

    for l in tl.static_range(L):
        if (l >= l0) & (l < l1):
            _stamp(trace_ptr, pid, l, 0, L, TRACE)
            if l == 0:
                src_ptr = x_ptr
            else:
                src_ptr = out_ptr
            if is_in:
                # ---- weights first: nothing here depends on another program --------------------
                w = tl.load(in_ws[l] + cols[None, :] * stride_wn + offs_d[:, None], mask=md[:, None] & mc[None, :],
                            other=0.0)
                nw = tl.load(norm_ws[l] + offs_d, mask=md, other=0.0)
                cw_new = tl.load(conv_ws[l] + c * stride_cwc + (K - 1) * stride_cwk, mask=is_conv,
                                 other=0.0).to(tl.float32)
                cbias = tl.load(conv_bs[l] + c, mask=is_conv, other=0.0).to(tl.float32)
                dtb = tl.load(dt_bs[l] + (cols - HP - NCONV), mask=is_dt, other=0.0).to(tl.float32)
                if l == 0:
                    pdl_wait(PDL)
                # ---- this program's own state (no other program of the launch touches it) -----
                slot = tl.load(slots_ptr + r, mask=mr, other=0).to(tl.int64)
                keep = own & (tl.load(reset_ptr + r, mask=mr, other=1) == 0)
                # Its conv rows: the old rows' share of the conv, and the shift by one row, now.
                base = conv_sts[l] + slot[:, None] * stride_cs + c[None, :]
                m_own = own[:, None] & is_conv[None, :]
                pre = _conv_history(base, stride_ck, (conv_ws[l] + c * stride_cwc)[None, :], stride_cwk,
                                    cbias[None, :], keep[:, None] & is_conv[None, :], m_own, is_conv[None, :], K)
                # the state tile of a head program's first row
                rr0 = rb.to(tl.int64) * BM + g * G
                first = (tl.zeros([1], tl.int64) + rr0 < rows) & (tl.zeros([1], tl.int32) + role >= S)  # [1]
                slot0 = tl.load(slots_ptr + rr0 + tl.zeros([1], tl.int32), mask=first, other=0).to(tl.int64)
                keep0 = first & (tl.load(reset_ptr + rr0 + tl.zeros([1], tl.int32), mask=first, other=1) == 0)
                sp0 = (ssm_sts[l] + slot0[:, None] * stride_ss + hd * stride_sh + offs_p[:, None] * stride_sp
                       + offs_n[None, :])
                state0 = tl.load(sp0, mask=s_mask & keep0[:, None], other=0.0).to(tl.float32)
                if l > l0:
                    _wait(fl + 3 * (l - 1) + 2, T)  # the previous layer's residual is complete
                _stamp(trace_ptr, pid, l, 1, L, TRACE)
                # ---- RMSNorm of the residual rows, in-projection, conv + activations -----------
                s = tl.load(src_ptr + r[:, None] * stride_x + offs_d[None, :], mask=mr[:, None] & md[None, :],
                            other=0.0, cache_modifier=".cg")
                _stamp_after(trace_ptr, pid, l, 4, s, L, TRACE)
                v = _rms_in_proj(s, nw, w, norm_eps, D, IEEE)  # [BM, W]
                _stamp_after(trace_ptr, pid, l, 5, v, L, TRACE)
                o = _conv_act(v, pre, cw_new, dtb, is_conv, is_dt)
                _stamp_after(trace_ptr, pid, l, 6, o, L, TRACE)
                tl.store(base + (K - 2) * stride_ck, v.to(conv_sts[l].dtype.element_ty), mask=m_own)
                if role < S:
                    tl.store(act_ptr + r[:, None] * stride_act + (cols - 2 * HP)[None, :], o,
                             mask=mr[:, None] & mc[None, :])
                    _stamp(trace_ptr, pid, l, 7, L, TRACE)
                    _signal(fl + 3 * l)
                    _stamp(trace_ptr, pid, l, 3, L, TRACE)
                else:
                    # ---- the state update of this head for this group's rows -------------------
                    z, xh = tl.split(tl.permute(tl.reshape(o, [BM, 2, BP]), (0, 2, 1)))  # [BM, BP] each
                    a_h = tl.load(a_s[l] + hd).to(tl.float32)
                    d_h = tl.load(d_s[l] + hd).to(tl.float32)
                    gnw = tl.load(gnorm_ws[l] + hd * P + offs_p, mask=mp, other=0.0).to(tl.float32)
                    _wait(fl + 3 * l, S)  # B, C and dt of these rows are written
                    _stamp(trace_ptr, pid, l, 2, L, TRACE)
                    for i in tl.static_range(G):
                        m = g * G + i
                        rr = rb.to(tl.int64) * BM + m
                        if rr < rows:
                            if i == 0:
                                sp = sp0
                                state = state0
                            else:
                                slot_m = tl.load(slots_ptr + rr + tl.zeros([1], tl.int32)).to(tl.int64)
                                keep_m = tl.load(reset_ptr + rr + tl.zeros([1], tl.int32)) == 0  # [1]
                                sp = (ssm_sts[l] + slot_m[:, None] * stride_ss + hd * stride_sh
                                      + offs_p[:, None] * stride_sp + offs_n[None, :])
                                state = tl.load(sp, mask=s_mask & keep_m[:, None], other=0.0).to(tl.float32)
                            arow = act_ptr + rr * stride_act
                            bs = tl.load(arow + offs_n, mask=mn, other=0.0, cache_modifier=".cg")
                            cs = tl.load(arow + N + offs_n, mask=mn, other=0.0, cache_modifier=".cg")
                            dt = tl.load(arow + 2 * N + hd, cache_modifier=".cg")
                            xm = _row(xh, loc, m)
                            zm = _row(z, loc, m)
                            state = state * tl.exp(dt * a_h) + (dt * xm)[:, None] * bs[None, :]
                            tl.store(sp, state.to(ssm_sts[l].dtype.element_ty), mask=s_mask)
                            yh = tl.sum(state * cs[None, :], axis=1) + d_h * xm
                            gv = tl.where(mp, yh * _silu(zm), 0.0)
                            grstd = 1.0 / tl.sqrt(tl.sum(gv * gv, axis=0) / P + eps)
                            tl.store(y_ptr + rr * stride_y + hd * P + offs_p,
                                     (gv * grstd * gnw).to(y_ptr.dtype.element_ty), mask=mp)
                    _stamp(trace_ptr, pid, l, 7, L, TRACE)
                    _signal(fl + 3 * l + 1)
                    _stamp(trace_ptr, pid, l, 3, L, TRACE)
            else:
                # ---- out-projection tile + residual -------------------------------------------
                wo = tl.load(out_ws[l] + ocols[None, :] * stride_wo + kk[:, None], mask=(kk[:, None] < HP) & mo[None, :],
                             other=0.0)  # [BK, BO]
                if l == 0:
                    pdl_wait(PDL)
                m2 = mr[:, None] & mo[None, :]
                # The residual columns this program adds to: x, or what it wrote itself one layer ago.
                res = tl.load(src_ptr + r[:, None] * stride_x + ocols[None, :], mask=m2, other=0.0,
                              cache_modifier=".cg")
                _wait(fl + 3 * l + 1, H * NG)
                _stamp(trace_ptr, pid, l, 1, L, TRACE)
                yo = tl.load(y_ptr + r[:, None] * stride_y + kk[None, :], mask=mr[:, None] & (kk[None, :] < HP),
                             other=0.0, cache_modifier=".cg")
                acc_o = _mm(yo, wo, IEEE)
                delta = acc_o.to(out_ptr.dtype.element_ty).to(tl.float32)
                tl.store(out_ptr + r[:, None] * stride_x + ocols[None, :],
                         (res.to(tl.float32) + delta).to(out_ptr.dtype.element_ty), mask=m2)
                _signal(fl + 3 * l + 2)
                _stamp(trace_ptr, pid, l, 3, L, TRACE)

    # The last program of this row block to get here zeroes its counters for the next launch.
    tl.debug_barrier()
    done = tl.atomic_add(fl + 3 * L, 1, sem="acq_rel")
    if done == R - 1:
        f = tl.arange(0, FB)
        tl.store(fl + f, tl.zeros([FB], tl.int32), mask=f < 3 * L + 1)


def mega_grid(batch: int, n_heads: int, d_state: int, head_dim: int, d_model: int) -> tuple[int, int, int, int]:
    """(programs, S, NG, T) of the launch for `batch` agents."""
    bp = triton.next_power_of_2(head_dim)
    s = triton.cdiv(2 * d_state + n_heads, 2 * bp)
    ng = triton.cdiv(min(batch, MEGA_ROWS), GROUP_ROWS)
    t = triton.cdiv(d_model, OUT_COLS)
    return triton.cdiv(batch, MEGA_ROWS) * (s + n_heads * ng + t), s, ng, t


def mega_fits(device: torch.device, batch: int, n_heads: int, d_state: int, head_dim: int, d_model: int) -> bool:
    """Whether the one-launch step serves this model and batch: head_dim >= 8 (a head program's
    two halves fill a 16-wide dot), and one program per SM holds the whole grid (every program
    resident at once, so none waits on one that has not started; always so in the interpreter,
    which runs one launch per layer)."""
    if head_dim < 8:
        return False
    if device.type != "cuda":
        return True
    programs = mega_grid(batch, n_heads, d_state, head_dim, d_model)[0]
    return programs <= torch.cuda.get_device_properties(device).multi_processor_count


def mamba2_backbone_step_mega(
    x: torch.Tensor,
    layers: list[MegaLayer] | tuple[MegaLayer, ...],
    slots: torch.Tensor,
    reset: torch.Tensor,
    n_heads: int,
    head_dim: int,
    d_state: int,
    eps: float = 1e-5,
    norm_eps: float = 1e-5,
    trace: torch.Tensor | None = None,
) -> torch.Tensor:
    """The residual stream after every layer of the stack, states of `slots` advanced in place.

    Same results as `layer.mamba2_layer_step_triton` applied layer after layer (before the final
    norm), in one launch on a GPU.

    Args:
        x: residual stream [B, Dm] (float32 or bfloat16); not modified.
        layers: the layers' tensors (`MegaLayer`), all of one shape.
        slots: int64 [B]; reset: bool or uint8 [B] (a reset row's old state is not read).
        n_heads, head_dim, d_state: H, P, N; eps: the gated norm's epsilon; norm_eps the
            layers' RMSNorm epsilon.
        trace: on a GPU, an int64 tensor of at least programs * layers * 8 elements that receives
            each program's timeline (`_stamp`'s events, %globaltimer ns), or None (compiled out).

    Returns:
        [B, Dm] in x's dtype.
    """
    h, p, n = int(n_heads), int(head_dim), int(d_state)
    if x.dim() != 2:
        raise ValueError(f"x must be [B, D], got {tuple(x.shape)}")
    if not layers:
        raise ValueError("at least one layer")
    x = x.contiguous()
    b, dm = x.shape
    programs, s, ng, t = mega_grid(b, h, n, p, dm)
    if not mega_fits(x.device, b, h, n, p, dm):
        raise ValueError(f"the one-launch step needs head_dim >= 8 and at most one program per SM; got head_dim {p} "
                         f"and {programs} programs for {b} agents: take the layer path")
    hp = h * p
    k = layers[0].conv_weight.shape[1]
    nconv, nout = hp + 2 * n, 2 * hp + 2 * n + h
    first = layers[0]
    for i, ly in enumerate(layers):
        shapes = {"norm_weight": (dm,), "in_weight": (nout, dm), "conv_weight": (nconv, k), "conv_bias": (nconv,),
                  "dt_bias": (h,), "A": (h,), "D": (h,), "gate_norm_weight": (hp,), "out_weight": (dm, hp)}
        for name, shape in shapes.items():
            tensor = getattr(ly, name)
            if tuple(tensor.shape) != shape:
                raise ValueError(f"layer {i}: {name} must be {list(shape)}, got {list(tensor.shape)}")
            if tensor.device != x.device:
                raise ValueError(f"layer {i}: {name} is on {tensor.device}, x on {x.device}")
        if ly.conv_state.shape[1:] != (k - 1, nconv) or ly.conv_state.stride(2) != 1:
            raise ValueError(f"layer {i}: conv_state must be [S, {k - 1}, {nconv}] with unit last stride, "
                             f"got {tuple(ly.conv_state.shape)}")
        if ly.ssm_state.shape[1:] != (h, p, n) or ly.ssm_state.stride(3) != 1:
            raise ValueError(f"layer {i}: ssm_state must be [S, {h}, {p}, {n}] with unit last stride, "
                             f"got {tuple(ly.ssm_state.shape)}")
        for name in ("in_weight", "out_weight", "conv_weight", "conv_state", "ssm_state"):
            if getattr(ly, name).stride() != getattr(first, name).stride():
                raise ValueError(f"layer {i}: {name} strides {getattr(ly, name).stride()} differ from layer 0's "
                                 f"{getattr(first, name).stride()}")
        if ly.in_weight.stride(1) != 1 or ly.out_weight.stride(1) != 1:
            raise ValueError(f"layer {i}: in_weight and out_weight need a unit last stride")
        for name in ("norm_weight", "conv_bias", "dt_bias", "A", "D", "gate_norm_weight"):
            if not getattr(ly, name).is_contiguous():
                raise ValueError(f"layer {i}: {name} must be contiguous")
    if slots.shape != (b,) or reset.shape != (b,):
        raise ValueError(f"slots and reset must be [{b}], got {tuple(slots.shape)} and {tuple(reset.shape)}")
    for name, tensor in [("slots", slots), ("reset", reset)] + [
            (f"layer {i}: {key}", getattr(ly, key)) for i, ly in enumerate(layers) for key in ("conv_state", "ssm_state")]:
        if tensor.device != x.device:
            raise ValueError(f"{name} is on {tensor.device}, x on {x.device}")
    out = _layer._alloc(b, dm, dtype=x.dtype, device=x.device)
    if b == 0:
        return out
    n_layers = len(layers)
    ieee = x.dtype == torch.float32 or x.device.type != "cuda"
    reset_u8 = (reset.view(torch.uint8) if reset.dtype == torch.bool else reset).contiguous()
    slots = slots.contiguous()
    act = _layer._alloc(b, 2 * n + h, dtype=torch.float32, device=x.device)
    y = _layer._alloc(b, hp, dtype=x.dtype, device=x.device)
    n_rb = triton.cdiv(b, MEGA_ROWS)
    if trace is not None and (trace.dtype != torch.int64 or trace.numel() < programs * len(layers) * 8
                              or x.device.type != "cuda"):
        raise ValueError(f"trace must be an int64 GPU tensor of at least {programs * len(layers) * 8} elements")
    flags = _counters(x.device, n_rb * (3 * n_layers + 1), "mega")
    cols = lambda name: tuple(getattr(ly, name) for ly in layers)  # noqa: E731
    one_launch = x.device.type == "cuda"
    pdl, extra = launch_kwargs(x.device) if one_launch else (False, {})
    for l0, l1 in ([(0, n_layers)] if one_launch else [(i, i + 1) for i in range(n_layers)]):
        _mega_kernel[(programs,)](
            x, out, x.stride(0), act, act.stride(0), y, y.stride(0), flags, slots, reset_u8,
            cols("norm_weight"), cols("in_weight"), cols("conv_weight"), cols("conv_bias"), cols("dt_bias"),
            cols("A"), cols("D"), cols("gate_norm_weight"), cols("out_weight"), cols("conv_state"), cols("ssm_state"),
            first.in_weight.stride(0), first.conv_weight.stride(0), first.conv_weight.stride(1),
            first.out_weight.stride(0), first.conv_state.stride(0), first.conv_state.stride(1),
            first.ssm_state.stride(0), first.ssm_state.stride(1), first.ssm_state.stride(2),
            b, l0, l1, float(eps), float(norm_eps), trace if trace is not None else flags,
            L=n_layers, D=dm, H=h, P=p, N=n, K=k, BM=MEGA_ROWS, G=GROUP_ROWS, NG=ng, S=s, T=t,
            BLOCK_D=max(16, triton.next_power_of_2(dm)), BP=triton.next_power_of_2(p),
            BN=triton.next_power_of_2(n), BO=OUT_COLS, BK=max(16, triton.next_power_of_2(hp)),
            FB=triton.next_power_of_2(3 * n_layers + 1),
            IEEE=ieee, PDL=pdl, TRACE=trace is not None, num_warps=MEGA_WARPS, **extra,
        )
    return out
