"""Chunked SSD scan in Triton, forward and backward, with per-row resets.

`ssd_scan_triton(x, dt, A, B, C, D, resets, initial_state)` computes what
`ref.ssd_scan_chunked` computes and is differentiable in x, dt, A, B, C, D and initial_state.
One program per (row, head) walks the chunks in order with the [P, N] state in registers:
inside a chunk the quadratic (masked, decayed) form, across chunks the recurrence. The forward
keeps the state at every chunk start; the backward walks the chunks in reverse from them. The
derivation is in README.md beside this file.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _chunk_terms(a_ptr, dt_row, x_row, b_row, c_row, r_row, t0, T,
                 stride_dt_t, stride_x_t, stride_bc_t, stride_c_t, stride_r_t,
                 P: tl.constexpr, N: tl.constexpr, L: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
                 h, PREC: tl.constexpr):
    """Load one chunk and form the terms the forward and backward share."""
    offs_l = tl.arange(0, L)
    offs_p = tl.arange(0, BP)
    offs_n = tl.arange(0, BN)
    tt = t0 + offs_l
    ml = tt < T
    x = tl.load(x_row + tt[:, None] * stride_x_t + offs_p[None, :],
                mask=ml[:, None] & (offs_p[None, :] < P), other=0.0).to(tl.float32)  # [L, P]
    dt = tl.load(dt_row + tt * stride_dt_t, mask=ml, other=0.0).to(tl.float32)  # [L]
    bm = tl.load(b_row + tt[:, None] * stride_bc_t + offs_n[None, :],
                 mask=ml[:, None] & (offs_n[None, :] < N), other=0.0).to(tl.float32)  # [L, N]
    cm = tl.load(c_row + tt[:, None] * stride_c_t + offs_n[None, :],
                 mask=ml[:, None] & (offs_n[None, :] < N), other=0.0).to(tl.float32)  # [L, N]
    r = tl.load(r_row + tt * stride_r_t, mask=ml, other=0).to(tl.int32)  # [L]
    a_h = tl.load(a_ptr + h).to(tl.float32)
    seg = tl.cumsum(r, 0)  # [L]: 0 while still in the segment the chunk started in
    acs = tl.cumsum(dt * a_h, 0)  # [L] log-decay from the chunk start (<= 0, decreasing)
    causal = (offs_l[:, None] >= offs_l[None, :]) & (seg[:, None] == seg[None, :])
    diff = tl.where(causal, acs[:, None] - acs[None, :], 0.0)
    decay = tl.where(causal, tl.exp(diff), 0.0)  # [L, L]
    cb = tl.dot(cm, tl.trans(bm), input_precision=PREC)  # [L, L]
    u = x * dt[:, None]  # [L, P]
    a_last = tl.sum(tl.where(offs_l == L - 1, acs, 0.0), 0)
    seg_last = tl.max(seg, 0)
    g0 = tl.where(seg == 0, tl.exp(acs), 0.0)  # [L] survival of the incoming state
    w = tl.where(seg == seg_last, tl.exp(a_last - acs), 0.0)  # [L] survival to the chunk end
    keep = tl.where(seg_last == 0, tl.exp(a_last), 0.0)
    return x, dt, bm, cm, acs, decay, cb, u, g0, w, keep, ml


@triton.jit
def _ssd_fwd_kernel(
    x_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, r_ptr, init_ptr,
    y_ptr, states_ptr, final_ptr,
    T, NC,
    stride_x_b, stride_x_t, stride_x_h,
    stride_dt_b, stride_dt_t, stride_dt_h,
    stride_b_b, stride_b_t, stride_c_b, stride_c_t,
    stride_r_b, stride_r_t,
    H: tl.constexpr, P: tl.constexpr, N: tl.constexpr, L: tl.constexpr,
    BP: tl.constexpr, BN: tl.constexpr,
    HAS_D: tl.constexpr, HAS_INIT: tl.constexpr, PREC: tl.constexpr,
):
    pid = tl.program_id(0)
    bi = (pid // H).to(tl.int64)
    h = pid % H
    offs_l = tl.arange(0, L)
    offs_p = tl.arange(0, BP)
    offs_n = tl.arange(0, BN)
    mpn = (offs_p[:, None] < P) & (offs_n[None, :] < N)
    pn = offs_p[:, None] * N + offs_n[None, :]
    bh = bi * H + h
    if HAS_INIT:
        state = tl.load(init_ptr + bh * P * N + pn, mask=mpn, other=0.0).to(tl.float32)  # [P, N]
    else:
        state = tl.zeros([BP, BN], dtype=tl.float32)
    d_h = 0.0
    if HAS_D:
        d_h = tl.load(d_ptr + h).to(tl.float32)
    x_row = x_ptr + bi * stride_x_b + h * stride_x_h
    dt_row = dt_ptr + bi * stride_dt_b + h * stride_dt_h
    b_row = b_ptr + bi * stride_b_b
    c_row = c_ptr + bi * stride_c_b
    r_row = r_ptr + bi * stride_r_b
    y_row = y_ptr + bi * T * H * P + h * P
    for ci in range(NC):
        t0 = ci * L
        tl.store(states_ptr + (bh * NC + ci) * P * N + pn, state, mask=mpn)
        x, dt, bm, cm, acs, decay, cb, u, g0, w, keep, ml = _chunk_terms(
            a_ptr, dt_row, x_row, b_row, c_row, r_row, t0, T,
            stride_dt_t, stride_x_t, stride_b_t, stride_c_t, stride_r_t, P, N, L, BP, BN, h, PREC)
        y = tl.dot(cb * decay, u, input_precision=PREC)  # [L, P] inside the chunk
        y += g0[:, None] * tl.dot(cm, tl.trans(state), input_precision=PREC)  # incoming state
        y += d_h * x
        tt = t0 + offs_l
        tl.store(y_row + tt[:, None] * H * P + offs_p[None, :], y.to(y_ptr.dtype.element_ty),
                 mask=ml[:, None] & (offs_p[None, :] < P))
        state = state * keep + tl.dot(tl.trans(u * w[:, None]), bm, input_precision=PREC)  # [P, N]
    tl.store(final_ptr + bh * P * N + pn, state, mask=mpn)


@triton.jit
def _ssd_bwd_kernel(
    x_ptr, dt_ptr, a_ptr, b_ptr, c_ptr, d_ptr, r_ptr, states_ptr,
    dy_ptr, dfinal_ptr,
    dx_ptr, ddt_ptr, db_ptr, dc_ptr, dinit_ptr, da_ptr, dd_ptr,
    T, NC,
    stride_x_b, stride_x_t, stride_x_h,
    stride_dt_b, stride_dt_t, stride_dt_h,
    stride_b_b, stride_b_t, stride_c_b, stride_c_t,
    stride_r_b, stride_r_t,
    stride_dy_b, stride_dy_t, stride_dy_h,
    H: tl.constexpr, P: tl.constexpr, N: tl.constexpr, L: tl.constexpr,
    BP: tl.constexpr, BN: tl.constexpr,
    HAS_D: tl.constexpr, PREC: tl.constexpr,
):
    pid = tl.program_id(0)
    bi = (pid // H).to(tl.int64)
    h = pid % H
    offs_l = tl.arange(0, L)
    offs_p = tl.arange(0, BP)
    offs_n = tl.arange(0, BN)
    mp = offs_p < P
    mn = offs_n < N
    mpn = mp[:, None] & mn[None, :]
    pn = offs_p[:, None] * N + offs_n[None, :]
    bh = bi * H + h
    a_h = tl.load(a_ptr + h).to(tl.float32)
    d_h = 0.0
    if HAS_D:
        d_h = tl.load(d_ptr + h).to(tl.float32)
    x_row = x_ptr + bi * stride_x_b + h * stride_x_h
    dt_row = dt_ptr + bi * stride_dt_b + h * stride_dt_h
    b_row = b_ptr + bi * stride_b_b
    c_row = c_ptr + bi * stride_c_b
    r_row = r_ptr + bi * stride_r_b
    dy_row = dy_ptr + bi * stride_dy_b + h * stride_dy_h
    ds = tl.load(dfinal_ptr + bh * P * N + pn, mask=mpn, other=0.0).to(tl.float32)  # dL/d(state at chunk end)
    da_acc = 0.0
    dd_acc = 0.0
    for cj in range(NC):
        ci = NC - 1 - cj
        t0 = ci * L
        tt = t0 + offs_l
        s0 = tl.load(states_ptr + (bh * NC + ci) * P * N + pn, mask=mpn, other=0.0)  # [P, N]
        x, dt, bm, cm, acs, decay, cb, u, g0, w, keep, ml = _chunk_terms(
            a_ptr, dt_row, x_row, b_row, c_row, r_row, t0, T,
            stride_dt_t, stride_x_t, stride_b_t, stride_c_t, stride_r_t, P, N, L, BP, BN, h, PREC)
        mlp = ml[:, None] & mp[None, :]
        dy = tl.load(dy_row + tt[:, None] * stride_dy_t + offs_p[None, :], mask=mlp, other=0.0).to(tl.float32)
        m = cb * decay  # [L, L]
        dm = tl.dot(dy, tl.trans(u), input_precision=PREC)  # [L, L]
        dme = dm * decay
        bds = tl.dot(bm, tl.trans(ds), input_precision=PREC)  # [L, P]: dS applied to B[s]
        du = tl.dot(tl.trans(m), dy, input_precision=PREC) + w[:, None] * bds  # [L, P]
        dc = tl.dot(dme, bm, input_precision=PREC) + g0[:, None] * tl.dot(dy, s0, input_precision=PREC)  # [L, N]
        db = tl.dot(tl.trans(dme), cm, input_precision=PREC) + w[:, None] * tl.dot(u, ds, input_precision=PREC)
        # Gradient of the log-decay cumsum at every step of the chunk.
        q = dme * cb
        y_in = tl.dot(cm, tl.trans(s0), input_precision=PREC)  # [L, P]
        wr = w * tl.sum(u * bds, 1)  # [L]
        da = tl.sum(q, 1) - tl.sum(q, 0) + g0 * tl.sum(dy * y_in, 1) - wr
        da_last = keep * tl.sum(tl.sum(ds * s0, 1), 0) + tl.sum(wr, 0)
        da += tl.where(offs_l == L - 1, da_last, 0.0)
        ddta = tl.cumsum(da, 0, reverse=True)  # d(dt*A) at each step
        ddt = ddta * a_h + tl.sum(du * x, 1)
        da_acc += tl.sum(ddta * dt, 0)
        dx = du * dt[:, None] + d_h * dy
        dd_acc += tl.sum(tl.sum(dy * x, 1), 0)
        tl.store(dx_ptr + (bi * T + tt[:, None]) * H * P + h * P + offs_p[None, :], dx, mask=mlp)
        tl.store(ddt_ptr + (bi * T + tt) * H + h, ddt, mask=ml)
        tl.store(db_ptr + ((bi * T + tt[:, None]) * H + h) * N + offs_n[None, :], db, mask=ml[:, None] & mn[None, :])
        tl.store(dc_ptr + ((bi * T + tt[:, None]) * H + h) * N + offs_n[None, :], dc, mask=ml[:, None] & mn[None, :])
        # dL/d(incoming state): through the readout and through the chunk-end state.
        ds = keep * ds + tl.dot(tl.trans(dy * g0[:, None]), cm, input_precision=PREC)
    tl.store(dinit_ptr + bh * P * N + pn, ds, mask=mpn)
    tl.store(da_ptr + bh, da_acc)
    tl.store(dd_ptr + bh, dd_acc)


def _alloc(*shape, dtype, device) -> torch.Tensor:
    """Fresh output buffers; tests replace this to fill them with NaN, so an unwritten element fails."""
    return torch.empty(*shape, dtype=dtype, device=device)


def _blocks(p: int, n: int):
    # tl.dot needs every dimension >= 16.
    return max(16, triton.next_power_of_2(p)), max(16, triton.next_power_of_2(n))


def _last_unit(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _launch_opts(bp: int, bn: int, chunk: int):
    return dict(num_warps=8 if bp * bn * chunk >= 64 * 64 * 32 else 4)


def _fwd(x, dt, A, B, C, D, resets_u8, init, chunk, prec):
    b, t, h, p = x.shape
    n = B.shape[-1]
    nc = triton.cdiv(t, chunk)
    bp, bn = _blocks(p, n)
    y = _alloc(b, t, h, p, dtype=x.dtype, device=x.device)
    states = _alloc(b, h, max(nc, 1), p, n, dtype=torch.float32, device=x.device)
    final = _alloc(b, h, p, n, dtype=torch.float32, device=x.device)
    _ssd_fwd_kernel[(b * h,)](
        x, dt, A, B, C, D if D is not None else A, resets_u8, init if init is not None else final,
        y, states, final, t, nc,
        x.stride(0), x.stride(1), x.stride(2), dt.stride(0), dt.stride(1), dt.stride(2),
        B.stride(0), B.stride(1), C.stride(0), C.stride(1), resets_u8.stride(0), resets_u8.stride(1),
        H=h, P=p, N=n, L=chunk, BP=bp, BN=bn, HAS_D=D is not None, HAS_INIT=init is not None, PREC=prec,
        **_launch_opts(bp, bn, chunk),
    )
    return y, final, states


class _SSDScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, resets_u8, init, chunk, prec):
        y, final, states = _fwd(x, dt, A, B, C, D, resets_u8, init, chunk, prec)
        ctx.save_for_backward(x, dt, A, B, C, D, resets_u8, states)
        ctx.has_init = init is not None
        ctx.init_dtype = init.dtype if init is not None else None
        ctx.chunk, ctx.prec = chunk, prec
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        x, dt, A, B, C, D, resets_u8, states = ctx.saved_tensors
        b, t, h, p = x.shape
        n = B.shape[-1]
        nc = triton.cdiv(t, ctx.chunk)
        bp, bn = _blocks(p, n)
        dy = _last_unit(dy if dy is not None else torch.zeros_like(x))
        dfinal = (dfinal if dfinal is not None else x.new_zeros(b, h, p, n, dtype=torch.float32)).float().contiguous()
        f32 = dict(dtype=torch.float32, device=x.device)
        dx = _alloc(b, t, h, p, **f32)
        ddt = _alloc(b, t, h, **f32)
        db = _alloc(b, t, h, n, **f32)
        dc = _alloc(b, t, h, n, **f32)
        dinit = _alloc(b, h, p, n, **f32)
        da = _alloc(b, h, **f32)
        dd = _alloc(b, h, **f32)
        _ssd_bwd_kernel[(b * h,)](
            x, dt, A, B, C, D if D is not None else A, resets_u8, states, dy, dfinal,
            dx, ddt, db, dc, dinit, da, dd, t, nc,
            x.stride(0), x.stride(1), x.stride(2), dt.stride(0), dt.stride(1), dt.stride(2),
            B.stride(0), B.stride(1), C.stride(0), C.stride(1), resets_u8.stride(0), resets_u8.stride(1),
            dy.stride(0), dy.stride(1), dy.stride(2),
            H=h, P=p, N=n, L=ctx.chunk, BP=bp, BN=bn, HAS_D=D is not None, PREC=ctx.prec,
            **_launch_opts(bp, bn, ctx.chunk),
        )
        return (
            dx.to(x.dtype), ddt.to(dt.dtype), da.sum(0).to(A.dtype), db.sum(2).to(B.dtype), dc.sum(2).to(C.dtype),
            dd.sum(0).to(D.dtype) if D is not None else None, None,
            dinit.to(ctx.init_dtype) if ctx.has_init else None, None, None,
        )


def ssd_scan_triton(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 32,
    precision: str = "ieee",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunked SSD scan in Triton; differentiable; same results as `ssd_scan_chunked`.

    Args:
        x: [B, T, H, P] (any float dtype; last dim contiguous, other strides free).
        dt: positive step sizes [B, T, H] (softplus already applied).
        A: negative decay rates [H]. B, C: [B, T, N]. D: [H] or None.
        resets: bool [B, T] or None; True zeroes the row's state before that step.
        initial_state: [B, H, P, N] or None (zeros).
        chunk_size: steps per chunk, a power of two >= 16.
        precision: "ieee" (float32 products, the default) or "tf32" (the matrix units' float32
            mode: faster, about 1e-3 relative error).

    Returns:
        (y [B, T, H, P] in x's dtype, final_state [B, H, P, N] float32). Arithmetic is float32.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be [B, T, H, P], got {tuple(x.shape)}")
    b, t, h, p = x.shape
    n = B.shape[-1]
    if dt.shape != (b, t, h) or A.shape != (h,) or B.shape != (b, t, n) or C.shape != (b, t, n):
        raise ValueError(
            f"shape mismatch: x {tuple(x.shape)}, dt {tuple(dt.shape)}, A {tuple(A.shape)}, "
            f"B {tuple(B.shape)}, C {tuple(C.shape)}"
        )
    if chunk_size < 16 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of two >= 16, got {chunk_size}")
    if precision not in ("ieee", "tf32"):
        raise ValueError(f"precision must be 'ieee' or 'tf32', got {precision!r}")
    if resets is None:
        resets = torch.zeros(b, t, dtype=torch.bool, device=x.device)
    if resets.shape != (b, t):
        raise ValueError(f"resets must be [{b}, {t}], got {tuple(resets.shape)}")
    if initial_state is not None and initial_state.shape != (b, h, p, n):
        raise ValueError(f"initial_state must be [{b}, {h}, {p}, {n}], got {tuple(initial_state.shape)}")
    resets_u8 = resets.view(torch.uint8) if resets.dtype == torch.bool else resets.to(torch.uint8)
    if t == 0:
        final = x.new_zeros(b, h, p, n, dtype=torch.float32) if initial_state is None else initial_state.float()
        return x.new_zeros(b, 0, h, p), final
    x, dt, B, C = _last_unit(x), _last_unit(dt), _last_unit(B), _last_unit(C)
    A = A.contiguous()
    D = D.contiguous() if D is not None else None
    init = initial_state.contiguous() if initial_state is not None else None
    return _SSDScan.apply(x, dt, A, B, C, D, _last_unit(resets_u8), init, int(chunk_size), precision)
