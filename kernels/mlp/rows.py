"""The MLP layers of `kernels.mlp.triton` for many rows: each program holds its rows' whole input.

`triton.fused_linear` splits a layer's outputs over programs, and each program walks its rows'
input from memory again (two passes for a norm's statistics, one for the product): with the
latent's 32 variables, the encoder's last layer and the prior head read each input row 96 times.
That is cheap for a few rows and the bulk of the cost for thousands. Here one program loads
BLOCK_M whole input rows once (`KD` <= `ROWS_MAX_KD`), applies the prologue in registers and walks
the layer's output columns, one tile at a time, for as many tiles as it owns: every tile of a
group where the batch gives enough programs, or a share of them. The reward head's two-hot mean
runs inside the program that owns all its bins, as a running softmax, with no counter.

Results equal `triton.fused_linear`'s and `triton.heads_out`'s (the same prologues, products and
epilogues; tests/kernels/test_fused_model.py runs both ways). H100, BASE whole step: 1,024 agents
611 -> 571 us; at 16,384 agents 8,410 -> 7,982, then still above the module heads' cuBLAS products
(7,805; tests/bench/results/experiments/wm-rows-mlp-h100.json), and bfloat16 dot inputs with
larger row blocks only tied them (experiments/wm-mlp-bf16-dots-h100.json). From TILES_FROM
(4,096) rows `triton.fused_linear` takes the layers again, in large 2D tiles, and beats both
(experiments/wm-mlp-tiles-h100.json).
"""

from __future__ import annotations

import triton
import triton.language as tl

from worldssm.kernels.mlp.triton import (
    _action_emb,
    _mac,
    _pick,
    _pro_apply,
    _pro_params,
    _store_tile,
    _twohot_step,
    _twohot_store,
)
from worldssm.kernels.step.pdl import pdl_wait

# Layers whose input rows fit one program (padded to a power of two) take this path.
ROWS_MAX_KD = 256


@triton.jit
def _rows_layer(
    x_ptr, stride_x, act_ptr, stride_act, pa_ptr, pb_ptr, wp, bp, gam, bet,
    stride_w, stride_wa, pw_ptr, stride_pw, pbias_ptr,
    out_ptr, stride_out, aux_ptr, stride_aux, bins_ptr,
    rows, eps, unimix, rb, g, t0, t1, col0,
    KD: tl.constexpr, XS: tl.constexpr, N: tl.constexpr, TILE: tl.constexpr,
    NA: tl.constexpr, DA: tl.constexpr, ACT_DISCRETE: tl.constexpr,
    PRO: tl.constexpr, EPI: tl.constexpr, STORE_PRO: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_KD: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_NA: tl.constexpr, BLOCK_DA: tl.constexpr, DOT: tl.constexpr, PDL: tl.constexpr,
):
    """Output tiles [t0, t1) of group g for rows block rb: input slice g * XS of x, outputs at
    columns col0 + tile columns (EPI 0-2), or one value per row (EPI 3, 4)."""
    r = rb.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mr = r < rows
    kk = tl.arange(0, BLOCK_KD)
    mk = kk < KD
    m2 = mr[:, None] & mk[None, :]
    nn = tl.arange(0, BLOCK_N)

    # ---- before the wait: parameters (nothing here is written by the previous kernel) ----------
    pa, pb = _pro_params(x_ptr, pa_ptr, pb_ptr, gam, bet, kk, mk, PRO)
    if NA > 0:
        ka = tl.arange(0, BLOCK_NA)
        ja = tl.arange(0, BLOCK_DA)
        pw = tl.load(pw_ptr + ja[None, :] * stride_pw + ka[:, None], mask=(ka[:, None] < NA) & (ja[None, :] < DA),
                     other=0.0).to(tl.float32)  # [NA, DA]
        pbias = tl.load(pbias_ptr + ja, mask=ja < DA, other=0.0).to(tl.float32)

    pdl_wait(PDL)

    x = tl.load(x_ptr + r[:, None] * stride_x + g * XS + kk[None, :], mask=m2, other=0.0).to(tl.float32)
    # The row statistics from the rows in registers: (mean, 1/std) for the LayerNorm, (0, 1/rms)
    # for the RMSNorm.
    mean = tl.zeros([BLOCK_M], tl.float32)
    rstd = tl.full([BLOCK_M], 1.0, tl.float32)
    if PRO == 2:
        mean = tl.sum(x, axis=1) / KD
        d = tl.where(m2, x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1) / KD + eps)
    if PRO == 3:
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / KD + eps)
    x = tl.where(m2, _pro_apply(x, pa, pb, mean, rstd, x_ptr, PRO), 0.0)
    if STORE_PRO:
        if g == 0:
            if t0 == 0:
                tl.store(aux_ptr + r[:, None] * stride_aux + kk[None, :], x, mask=m2)
    if NA > 0:
        emb = _action_emb(act_ptr, stride_act, r, mr, ka, pw, pbias, NA, BLOCK_M, BLOCK_DA, ACT_DISCRETE, DOT)

    if EPI == 3:
        m_run = tl.full([BLOCK_M], float("-inf"), tl.float32)
        s_run = tl.zeros([BLOCK_M], tl.float32)
        sb_run = tl.zeros([BLOCK_M], tl.float32)
    for t in range(t0, t1):
        local = t * TILE + nn
        mc = (nn < TILE) & (local < N)
        w = tl.load(wp + local[None, :] * stride_w + kk[:, None], mask=mk[:, None] & mc[None, :], other=0.0)
        acc = _mac(tl.zeros([BLOCK_M, BLOCK_N], tl.float32), x, w.to(tl.float32), DOT)
        if NA > 0:
            wa = tl.load(wp + KD + local[None, :] * stride_w + ja[:, None] * stride_wa,
                         mask=(ja[:, None] < DA) & mc[None, :], other=0.0).to(tl.float32)
            acc = _mac(acc, emb, wa, DOT)
        if HAS_BIAS:
            acc = acc + tl.load(bp + local, mask=mc, other=0.0).to(tl.float32)[None, :]
        m = mr[:, None] & mc[None, :]
        cols = col0 + local
        _store_tile(acc, m, r, cols, out_ptr, stride_out, aux_ptr, stride_aux, unimix, TILE, EPI, TILE)
        if EPI == 3:  # two-hot reward: the logits to aux, a running softmax of the bins
            tl.store(aux_ptr + r[:, None] * stride_aux + cols[None, :], acc, mask=m)
            logits = tl.where(mc[None, :], acc, float("-inf"))
            m_run, s_run, sb_run = _twohot_step(m_run, s_run, sb_run, logits, bins_ptr, local, mc)
        if EPI == 4:  # continue: the logit's sigmoid to out, the logit to aux
            logit = tl.sum(tl.where(m, acc, 0.0), axis=1)
            tl.store(out_ptr + r * stride_out, tl.sigmoid(logit), mask=mr)
            tl.store(aux_ptr + r * stride_aux, logit, mask=mr)
    if EPI == 3:
        _twohot_store(out_ptr, stride_out, r, mr, sb_run / s_run)


@triton.jit
def _rows_linear_kernel(
    x_ptr, stride_x, act_ptr, stride_act, pa_ptr, pb_ptr,
    w0, w1, w2, b0, b1, b2, ga0, ga1, ga2, be0, be1, be2,
    stride_w, stride_wa, pw_ptr, stride_pw, pbias_ptr,
    out_ptr, stride_out, aux_ptr, stride_aux, bins_ptr,
    rows, eps, unimix,
    KD: tl.constexpr, XS: tl.constexpr, N: tl.constexpr, TILE: tl.constexpr, TILES: tl.constexpr,
    SPLIT: tl.constexpr, NA: tl.constexpr, DA: tl.constexpr, ACT_DISCRETE: tl.constexpr,
    PRO: tl.constexpr, EPI: tl.constexpr, STORE_PRO: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_KD: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_NA: tl.constexpr, BLOCK_DA: tl.constexpr, DOT: tl.constexpr, PDL: tl.constexpr,
):
    # Program (p, rb): group p // SPLIT, its share p % SPLIT of the group's TILES tiles.
    p = tl.program_id(0)
    rb = tl.program_id(1)
    g = p // SPLIT
    share = p % SPLIT
    per = (TILES + SPLIT - 1) // SPLIT
    t0 = share * per
    t1 = tl.minimum(t0 + per, TILES)
    _rows_layer(
        x_ptr, stride_x, act_ptr, stride_act, pa_ptr, pb_ptr, _pick(g, w0, w1, w2), _pick(g, b0, b1, b2),
        _pick(g, ga0, ga1, ga2), _pick(g, be0, be1, be2), stride_w, stride_wa, pw_ptr, stride_pw, pbias_ptr,
        out_ptr, stride_out, aux_ptr, stride_aux, bins_ptr, rows, eps, unimix, rb, g, t0, t1, g * N,
        KD, XS, N, TILE, NA, DA, ACT_DISCRETE, PRO, EPI, STORE_PRO, HAS_BIAS,
        BLOCK_M, BLOCK_KD, BLOCK_N, BLOCK_NA, BLOCK_DA, DOT, PDL)


@triton.jit
def _rows_heads_kernel(
    x_ptr, stride_x, stride_w, bins_ptr, rows, eps, unimix,
    w0, b0, ga0, be0, out0, stride_o0, aux0, stride_a0,
    w1, b1, ga1, be1, out1, stride_o1, aux1, stride_a1,
    w2, b2, ga2, be2, out2, stride_o2, aux2, stride_a2,
    KD: tl.constexpr, N0: tl.constexpr, TILE0: tl.constexpr, TILES0: tl.constexpr, SPLIT0: tl.constexpr,
    BN0: tl.constexpr, N1: tl.constexpr, TILE1: tl.constexpr, TILES1: tl.constexpr, BN1: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_KD: tl.constexpr, DOT: tl.constexpr, PDL: tl.constexpr,
):
    # Programs [0, SPLIT0): shares of the prior's log-probabilities (a latent variable per tile);
    # SPLIT0: the reward's bins, all of them (its two-hot mean needs every bin); SPLIT0 + 1: the
    # continue logit. Head i reads its slice [i*KD, (i+1)*KD) of the shared hidden rows.
    p = tl.program_id(0)
    rb = tl.program_id(1)
    if p < SPLIT0:
        per = (TILES0 + SPLIT0 - 1) // SPLIT0
        _rows_layer(
            x_ptr, stride_x, x_ptr, 0, x_ptr, x_ptr, w0, b0, ga0, be0, stride_w, 0, x_ptr, 0, x_ptr,
            out0, stride_o0, aux0, stride_a0, bins_ptr, rows, eps, unimix, rb, 0, p * per,
            tl.minimum(p * per + per, TILES0), 0,
            KD, 0, N0, TILE0, 0, 0, True, 2, 2, False, True, BLOCK_M, BLOCK_KD, BN0, 16, 16, DOT, PDL)
    elif p == SPLIT0:
        _rows_layer(
            x_ptr + KD, stride_x, x_ptr, 0, x_ptr, x_ptr, w1, b1, ga1, be1, stride_w, 0, x_ptr, 0, x_ptr,
            out1, stride_o1, aux1, stride_a1, bins_ptr, rows, eps, unimix, rb, 0, 0, TILES1, 0,
            KD, 0, N1, TILE1, 0, 0, True, 2, 3, False, True, BLOCK_M, BLOCK_KD, BN1, 16, 16, DOT, PDL)
    else:
        _rows_layer(
            x_ptr + 2 * KD, stride_x, x_ptr, 0, x_ptr, x_ptr, w2, b2, ga2, be2, stride_w, 0, x_ptr, 0, x_ptr,
            out2, stride_o2, aux2, stride_a2, bins_ptr, rows, eps, unimix, rb, 0, 0, 1, 0,
            KD, 0, 1, 1, 0, 0, True, 2, 4, False, True, BLOCK_M, BLOCK_KD, 16, 16, 16, DOT, PDL)


def rows_plan(b: int, kd: int, n_programs_per_block: int) -> dict:
    """BLOCK_M, warps and pipeline stages for `b` rows of `kd` inputs, and how many programs
    share a group's tiles so that the launch fills the GPU (about 2 programs per SM of an
    H100/H200). H100, BASE whole step at 1,024 / 16,384 agents: 2 stages 571 / 7,982 us, 3 (the
    default, whose weight tiles overflow shared memory at BLOCK_M 64) 589 / 8,098, 1 595 / 8,242;
    BLOCK_M 16: 608 / 8,438 (tests/bench/results/experiments/wm-rows-mlp-h100.json)."""
    block_kd = max(16, triton.next_power_of_2(kd))
    block_m = 64 if b >= 4096 and block_kd <= 128 else 32
    blocks = triton.cdiv(b, block_m)
    split = max(1, min(8, triton.cdiv(264, blocks * n_programs_per_block)))
    return dict(block_m=block_m, block_kd=block_kd, blocks=blocks, split=split,
                warps=8 if block_m * block_kd >= 8192 else 4, stages=2)
