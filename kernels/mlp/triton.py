"""One MLP layer of the world model's encoder or heads as one Triton launch: prologue, GEMM, epilogue.

`fused_linear` computes, for each of up to three groups g (the prior, reward and continue heads
share one launch per hidden layer),

    out[:, g*N:(g+1)*N] = epilogue(prologue(x[:, g*XS : g*XS + KD]) @ W_g^T + b_g)

where the prologue is what the previous layer left undone: nothing, the observation's
standardise + symlog, LayerNorm + SiLU (the previous hidden layer's), or the backbone's final
RMSNorm; and the epilogue is what the next consumer would otherwise launch: nothing, a unimix
softmax per latent variable (probabilities, or log-probabilities plus probabilities), the two-hot
reward mean, or the continue sigmoid. A hidden layer's LayerNorm needs its whole row, so it runs
in the next launch's prologue: every launch can split its columns over many programs.

Weights are the modules' own tensors, read in place (no packed copies that could go stale).
Launched with PDL where the GPU has it: the bias and action-embedding weights load before the
wait. Each program walks its input rows BLOCK_K columns at a time (a first pass for the row
statistics where the prologue is a norm), so neither the whole row nor the whole weight column is
held in registers (the earlier whole-row tiles spilled: 35.7 ms for the whole world-model step at
16,384 agents on an H200, against 7.4 for the module path). From ROWS_FROM rows a layer takes
`kernels/mlp/rows.py` instead, where one program reads its rows' input once for every output tile;
from TILES_FROM rows this kernel again, in TILE_PLAN's large 2D tiles, each softmax tile holding
several latent variables. There a hidden layer's tile is its whole row, so its epilogue leaves
the next LayerNorm's (mean, variance) per row (`ln_stats_buffer`) and the next launch reads its
input once instead of three times. H100, BASE whole step at 16,384 agents: 7,288 -> 7,195 us; the
MLP launches 593 -> 495 us a step (scripts/ln_stats_ab.py,
tests/bench/results/experiments/wm-ln-stats-epilogue-h100.json).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from worldssm.kernels.step.pdl import launch_kwargs, pdl_wait
from worldssm.kernels.step.triton import _counters

PRO_NONE, PRO_SYMLOG, PRO_LN_SILU, PRO_RMS = 0, 1, 2, 3
# Up to this many rows a layer multiplies by broadcast and sum, 4 rows per program, not `tl.dot`
# (IEEE float32 in row blocks of 16 and more). H100, a 256-wide layer with its LayerNorm
# prologue: 1 agent 11.3 us by dot, 2.5 by broadcast; 16 agents 15.1 against 2.7; 64 agents
# 20.2 against 3.5 (tests/bench/results/experiments/fused-mlp-small-batch-h100.json).
SMALL_ROWS = 64
# From this many rows a layer whose input rows fit one program (`rows.ROWS_MAX_KD`) takes
# `kernels.mlp.rows`: each program reads its rows' input once and walks every output tile;
# wider inputs (the latent into `in_proj`) take one tile of all the outputs per program instead.
ROWS_FROM = 256
EPI_NONE, EPI_PROBS, EPI_LOGP, EPI_TWOHOT, EPI_SIGMOID = 0, 1, 2, 3, 4
# From this many rows a layer takes TILE_PLAN's large 2D tiles (a GEMM's grid: column tiles x row
# blocks, the input walked block_k columns at a time, pipelined over `stages`), several latent
# variables per tile, rather than `kernels.mlp.rows`. `heads_out`'s launch instantiates three
# layers in one program (the prior, the reward, the continue head): HEADS_TILE_PLAN, smaller (at
# 128 x 256 its program spills registers). H100, BASE whole step (scripts/mlp_tiles_sweep.py,
# tests/bench/results/experiments/wm-mlp-tiles-h100.json): 16,384 agents 7,408 us with these
# plans, 7,461 with 128 x 256 for the heads too, 7,513 with 64 x 256 for the other layers, 7,773
# with `kernels.mlp.rows`, 7,789 with the module heads; 4,096 agents 1,960, rows 2,035, module
# heads 2,093; 1,024 agents: rows 576 us, the best tiles 602 (so TILES_FROM).
TILES_FROM = 4096
TILE_PLAN = dict(block_m=128, block_n=256, block_k=32, warps=8, stages=3)
HEADS_TILE_PLAN = dict(block_m=64, block_n=256, block_k=32, warps=8, stages=3)


def _dot_mode(dot: bool) -> int:
    """The kernels' DOT constexpr: 0 broadcast product, 1 IEEE `tl.dot`, 2 TF32 `tl.dot` (the
    default, `worldssm.kernels.serving_tf32`). H100, BASE whole step at 1,024 agents: the fused
    encoder and heads take 526 us of the step with IEEE dots, 140 with TF32; the step's
    predictions move by about 1% relative RMS, what the bf16 backbone's own roundings already
    give (tests/bench/results/experiments/wm-heads-tf32-h100.json)."""
    from worldssm.kernels import serving_tf32

    return (2 if serving_tf32() else 1) if dot else 0


@triton.jit
def _log1p(a):
    # log(1 + a) accurate for small a (a >= 0 here): log(u) * a / (u - 1), a where 1 + a rounds to 1.
    u = 1.0 + a
    return tl.where(u == 1.0, a, tl.log(u) * (a / (u - 1.0)))


@triton.jit
def _expm1(a):
    u = tl.exp(a)
    return tl.where(u == 1.0, a, tl.where(a > 20.0, u - 1.0, (u - 1.0) * (a / tl.log(u))))


@triton.jit
def _mac(acc, a, b, DOT: tl.constexpr):
    """acc + a @ b in float32: `tl.dot` for row blocks of 16 and more (DOT 1: IEEE float32; DOT 2:
    TF32 tensor-core inputs, see `_dot_mode`), else (DOT 0) a broadcast product and sum (the 4-row
    blocks of batches up to SMALL_ROWS; see there why)."""
    if DOT == 2:
        acc = tl.dot(a, b, acc, input_precision="tf32")
    elif DOT == 1:
        acc = tl.dot(a, b, acc, input_precision="ieee")
    else:
        acc = acc + tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    return acc


@triton.jit
def _pick(g, p0, p1, p2):
    if g == 0:
        p = p0
    elif g == 1:
        p = p1
    else:
        p = p2
    return p


@triton.jit
def _x_chunk(x_ptr, row, mr, g, XS: tl.constexpr, kk, mk):
    """Columns kk of group g's input for rows `row`, float32 [BM, BK] (0 where masked)."""
    return tl.load(x_ptr + row[:, None] + g * XS + kk[None, :], mask=mr[:, None] & mk[None, :],
                   other=0.0).to(tl.float32)


@triton.jit
def _pro_chunk(x_ptr, row, mr, g, XS: tl.constexpr, kk, mk, pa_ptr, pb_ptr, gam_ptr, bet_ptr, mean, rstd,
               PRO: tl.constexpr):
    """Columns kk of the prologue's output for rows `row` ([BM, BK] float32, 0 outside mk), from
    the row statistics of `_row_stats`."""
    xf = _x_chunk(x_ptr, row, mr, g, XS, kk, mk)
    pa, pb = _pro_params(x_ptr, pa_ptr, pb_ptr, gam_ptr, bet_ptr, kk, mk, PRO)
    return tl.where(mr[:, None] & mk[None, :], _pro_apply(xf, pa, pb, mean, rstd, x_ptr, PRO), 0.0)


@triton.jit
def _pro_params(x_ptr, pa_ptr, pb_ptr, gam_ptr, bet_ptr, kk, mk, PRO: tl.constexpr):
    """The prologue's parameters at columns kk: (loc, scale) for the standardise + symlog, (gamma,
    beta) of the LayerNorm, (weight rounded to x's dtype, unused) of the RMSNorm; else zeros."""
    pa = tl.zeros(kk.shape, tl.float32)
    pb = pa
    if PRO == 1:
        pa = tl.load(pa_ptr + kk, mask=mk, other=0.0)
        pb = tl.load(pb_ptr + kk, mask=mk, other=1.0)
    if PRO == 2:
        pa = tl.load(gam_ptr + kk, mask=mk, other=0.0).to(tl.float32)
        pb = tl.load(bet_ptr + kk, mask=mk, other=0.0).to(tl.float32)
    if PRO == 3:
        pa = tl.load(pa_ptr + kk, mask=mk, other=0.0).to(x_ptr.dtype.element_ty).to(tl.float32)
    return pa, pb


@triton.jit
def _pro_apply(xf, pa, pb, mean, rstd, x_ptr, PRO: tl.constexpr):
    """The prologue on rows xf [BM, BK] (float32) with `_pro_params`' parameters and the row
    statistics (mean, 1/std or 1/rms)."""
    if PRO == 1:  # standardise: (x - loc) / scale, then symlog
        v = (xf - pa[None, :]) / pb[None, :]
        av = tl.abs(v)
        xf = tl.where(v < 0, -_log1p(av), _log1p(av))
    if PRO == 2:  # the previous layer's LayerNorm (per group) then SiLU
        xf = (xf - mean[:, None]) * rstd[:, None] * pa[None, :] + pb[None, :]
        xf = xf * tl.sigmoid(xf)
    if PRO == 3:  # the backbone's final RMSNorm, rounded in the stream's dtype
        hn = (xf * rstd[:, None]).to(x_ptr.dtype.element_ty).to(tl.float32)
        xf = (hn * pa[None, :]).to(x_ptr.dtype.element_ty).to(tl.float32)
    return xf


@triton.jit
def _action_emb(act_ptr, stride_act, r, mr, ka, pw, pbias, NA: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_DA: tl.constexpr, ACT_DISCRETE: tl.constexpr, DOT: tl.constexpr):
    """The action embedding of rows r [BM, DA]: (one-hot or features) @ proj^T + proj bias."""
    if ACT_DISCRETE:
        a_idx = tl.minimum(tl.maximum(tl.load(act_ptr + r * stride_act, mask=mr, other=0), 0), NA - 1)
        f = (ka[None, :] == a_idx[:, None]).to(tl.float32)  # [BM, NA] one-hot
    else:
        f = tl.load(act_ptr + r[:, None] * stride_act + ka[None, :], mask=mr[:, None] & (ka[None, :] < NA),
                    other=0.0).to(tl.float32)
    return _mac(tl.zeros([BLOCK_M, BLOCK_DA], tl.float32), f, pw, DOT) + pbias[None, :]


@triton.jit
def _twohot_step(m_run, s_run, sb_run, logits, bins_ptr, lc, mc):
    """One chunk of bins (columns lc, logits [BM, BC], -inf outside mc) into the running softmax
    of the two-hot reward: its max, sum of e and sum of e * bin per row."""
    m_new = tl.maximum(m_run, tl.max(logits, axis=1))
    alpha = tl.exp(m_run - m_new)
    e = tl.exp(logits - m_new[:, None])
    bins = tl.load(bins_ptr + lc, mask=mc, other=0.0)
    return m_new, s_run * alpha + tl.sum(e, axis=1), sb_run * alpha + tl.sum(e * bins[None, :], axis=1)


@triton.jit
def _twohot_store(out_ptr, stride_out, r, mr, sm):
    """The reward: symexp of the expected bin `sm` [BM]."""
    a = tl.abs(sm)
    tl.store(out_ptr + r * stride_out, tl.where(sm < 0, -_expm1(a), _expm1(a)), mask=mr)


@triton.jit
def _store_tile(acc, m, r, cols, out_ptr, stride_out, aux_ptr, stride_aux, unimix, TILE: tl.constexpr,
                EPI: tl.constexpr, CLS: tl.constexpr):
    """A tile's outputs for EPI 0 (as they are, in out's dtype) and EPI 1 / 2 (TILE // CLS latent
    variables of CLS classes per tile, each its unimix softmax, as probabilities, or
    log-probabilities to out and probabilities to aux). Several variables per tile need
    TILE == BLOCK_N (a power of two, so CLS is one too)."""
    if EPI == 0:
        tl.store(out_ptr + r[:, None] * stride_out + cols[None, :], acc.to(out_ptr.dtype.element_ty), mask=m)
    if EPI == 1 or EPI == 2:
        logits = tl.where(m, acc, float("-inf"))
        if TILE == CLS:
            e = tl.exp(logits - tl.max(logits, axis=1)[:, None])
            p = e / tl.sum(e, axis=1)[:, None]
        else:
            bm: tl.constexpr = acc.shape[0]
            l3 = tl.reshape(logits, (bm, TILE // CLS, CLS))
            e = tl.exp(l3 - tl.max(l3, axis=2)[:, :, None])
            p = tl.reshape(e / tl.sum(e, axis=2)[:, :, None], (bm, TILE))
        p = (1.0 - unimix) * p + unimix / CLS
        if EPI == 1:
            tl.store(out_ptr + r[:, None] * stride_out + cols[None, :], p, mask=m)
        else:
            tl.store(out_ptr + r[:, None] * stride_out + cols[None, :], tl.log(p), mask=m)
            tl.store(aux_ptr + r[:, None] * stride_aux + cols[None, :], p, mask=m)


@triton.jit
def _row_stats(x_ptr, row, mr, g, XS: tl.constexpr, KD: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_K: tl.constexpr, eps, PRO: tl.constexpr):
    # BLOCK_K here is the launch's BLOCK_S: as wide as 4K values per program allow (the whole
    # row at small batches), since each chunk is a dependent round trip to memory.
    """(mean, 1/std) of each row for the LayerNorm prologue (two passes: the mean, then the
    squared deviations), (0, 1/rms) for the RMSNorm one, (0, 1) otherwise."""
    mean = tl.zeros([BLOCK_M], tl.float32)
    rstd = tl.full([BLOCK_M], 1.0, tl.float32)
    if PRO == 2 or PRO == 3:
        s1 = tl.zeros([BLOCK_M], tl.float32)
        for k0 in range(0, KD, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)
            xf = _x_chunk(x_ptr, row, mr, g, XS, kk, kk < KD)
            if PRO == 2:
                s1 += tl.sum(xf, axis=1)
            else:
                s1 += tl.sum(xf * xf, axis=1)
        if PRO == 2:
            mean = s1 / KD
            s2 = tl.zeros([BLOCK_M], tl.float32)
            for k0 in range(0, KD, BLOCK_K):
                kk = k0 + tl.arange(0, BLOCK_K)
                mk = kk < KD
                xf = _x_chunk(x_ptr, row, mr, g, XS, kk, mk)
                d = tl.where(mk[None, :], xf - mean[:, None], 0.0)
                s2 += tl.sum(d * d, axis=1)
            rstd = 1.0 / tl.sqrt(s2 / KD + eps)
        else:
            rstd = 1.0 / tl.sqrt(s1 / KD + eps)
    return mean, rstd


@triton.jit
def _fused_linear_kernel(
    x_ptr, stride_x, act_ptr, stride_act, pa_ptr, pb_ptr,
    w0, w1, w2, b0, b1, b2, ga0, ga1, ga2, be0, be1, be2,
    stride_w, stride_wa, pw_ptr, stride_pw, pbias_ptr,
    out_ptr, stride_out, aux_ptr, stride_aux, bins_ptr, count_ptr,
    rows, eps, unimix,
    KD: tl.constexpr, XS: tl.constexpr, N: tl.constexpr, TILE: tl.constexpr, TILES: tl.constexpr,
    NA: tl.constexpr, DA: tl.constexpr, ACT_DISCRETE: tl.constexpr,
    PRO: tl.constexpr, EPI: tl.constexpr, STORE_PRO: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_R: tl.constexpr,
    BLOCK_NA: tl.constexpr, BLOCK_DA: tl.constexpr, DOT: tl.constexpr, PDL: tl.constexpr, CLS: tl.constexpr,
    st_in_ptr, st_out_ptr, stride_st, STATS_IN: tl.constexpr, STATS_OUT: tl.constexpr, T_OFF: tl.constexpr = 0,
):
    # Launched as a kernel (T_OFF 0), or called by `_heads_out_kernel` for the programs from T_OFF on.
    t = tl.program_id(0) - T_OFF
    rb = tl.program_id(1)
    # The input row is walked BLOCK_K columns at a time (row statistics first, where the
    # prologue is a norm), so no tile of a whole row or a whole weight column is ever held.
    g = t // TILES  # group (head) of this column tile; tiles never straddle groups
    local = (t % TILES) * TILE + tl.arange(0, BLOCK_N)  # [BN] columns within the group
    mc = (tl.arange(0, BLOCK_N) < TILE) & (local < N)
    r = rb.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    mr = r < rows
    row = r * stride_x

    # ---- before the wait: parameters (nothing here is written by the previous kernel) ----------
    wp = _pick(g, w0, w1, w2)
    bp = _pick(g, b0, b1, b2)
    gam = _pick(g, ga0, ga1, ga2)
    bet = _pick(g, be0, be1, be2)
    if HAS_BIAS:
        bias = tl.load(bp + local, mask=mc, other=0.0).to(tl.float32)
    if NA > 0:  # the action embedding: (one-hot or features) @ proj^T + proj bias, then W_a
        ka = tl.arange(0, BLOCK_NA)
        ja = tl.arange(0, BLOCK_DA)
        pw = tl.load(pw_ptr + ja[None, :] * stride_pw + ka[:, None], mask=(ka[:, None] < NA) & (ja[None, :] < DA),
                     other=0.0).to(tl.float32)  # [NA, DA]
        pbias = tl.load(pbias_ptr + ja, mask=ja < DA, other=0.0).to(tl.float32)
        wa = tl.load(wp + KD + local[None, :] * stride_w + ja[:, None] * stride_wa,
                     mask=(ja[:, None] < DA) & mc[None, :], other=0.0).to(tl.float32)  # [DA, BN]

    pdl_wait(PDL)

    if STATS_IN:  # the LayerNorm's (mean, variance) per row and group, from the previous layer's epilogue
        mean = tl.load(st_in_ptr + r * stride_st + 2 * g, mask=mr, other=0.0)
        rstd = 1.0 / tl.sqrt(tl.load(st_in_ptr + r * stride_st + 2 * g + 1, mask=mr, other=1.0) + eps)
    else:
        mean, rstd = _row_stats(x_ptr, row, mr, g, XS, KD, BLOCK_M, BLOCK_S, eps, PRO)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, KD, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        mk = kk < KD
        xf = _pro_chunk(x_ptr, row, mr, g, XS, kk, mk, pa_ptr, pb_ptr, gam, bet, mean, rstd, PRO)
        if STORE_PRO:
            if t == 0:
                tl.store(aux_ptr + r[:, None] * stride_aux + kk[None, :], xf, mask=mr[:, None] & mk[None, :])
        w = tl.load(wp + local[None, :] * stride_w + kk[:, None], mask=mk[:, None] & mc[None, :], other=0.0)
        acc = _mac(acc, xf, w.to(tl.float32), DOT)
    if NA > 0:
        emb = _action_emb(act_ptr, stride_act, r, mr, ka, pw, pbias, NA, BLOCK_M, BLOCK_DA, ACT_DISCRETE, DOT)
        acc = _mac(acc, emb, wa, DOT)
    if HAS_BIAS:
        acc = acc + bias[None, :]

    m = mr[:, None] & mc[None, :]
    if STATS_OUT:  # this tile is its group's whole row: the next layer's LayerNorm statistics
        mean_o = tl.sum(tl.where(m, acc, 0.0), axis=1) / N
        dev = tl.where(m, acc - mean_o[:, None], 0.0)
        tl.store(st_out_ptr + r * stride_st + 2 * g, mean_o, mask=mr)
        tl.store(st_out_ptr + r * stride_st + 2 * g + 1, tl.sum(dev * dev, axis=1) / N, mask=mr)
    cols = g * N + local
    _store_tile(acc, m, r, cols, out_ptr, stride_out, aux_ptr, stride_aux, unimix, TILE, EPI, CLS)
    if EPI == 3:
        # Two-hot reward: the bins are split over the column tiles like any layer; each tile
        # stores its logits to aux, and the last tile of this row block to arrive (a counter
        # left at 0 for the next launch) reads them all back, BLOCK_R at a time with a running
        # softmax (max, sum of e, sum of e * bin), and writes symexp of the expected bin.
        tl.store(aux_ptr + r[:, None] * stride_aux + cols[None, :], acc, mask=m)
        tl.debug_barrier()  # every thread's logits are stored before the release below
        arrived = tl.atomic_add(count_ptr + rb, 1, sem="acq_rel")
        if arrived == TILES - 1:
            tl.debug_barrier()
            m_run = tl.full([BLOCK_M], float("-inf"), tl.float32)
            s_run = tl.zeros([BLOCK_M], tl.float32)
            sb_run = tl.zeros([BLOCK_M], tl.float32)
            for c0 in range(0, N, BLOCK_R):
                lc = c0 + tl.arange(0, BLOCK_R)
                mcc = lc < N
                logits = tl.load(aux_ptr + r[:, None] * stride_aux + lc[None, :], mask=mr[:, None] & mcc[None, :],
                                 other=float("-inf"), cache_modifier=".cg")  # written by other programs: not L1
                m_run, s_run, sb_run = _twohot_step(m_run, s_run, sb_run, logits, bins_ptr, lc, mcc)
            _twohot_store(out_ptr, stride_out, r, mr, sb_run / s_run)
            tl.atomic_xchg(count_ptr + rb, 0, sem="relaxed")
    if EPI == 4:  # continue: the logit's sigmoid to out, the logit to aux
        logit = tl.sum(tl.where(m, acc, 0.0), axis=1)
        tl.store(out_ptr + r * stride_out, tl.sigmoid(logit), mask=mr)
        tl.store(aux_ptr + r * stride_aux, logit, mask=mr)


def _alloc(*shape, dtype, device) -> torch.Tensor:
    """Fresh output buffers; tests replace this to fill them with NaN, so an unwritten element fails."""
    return torch.empty(*shape, dtype=dtype, device=device)


def fused_linear(x: torch.Tensor, weights, biases, *, pro: int = PRO_NONE, epi: int = EPI_NONE,
                 pro_a: torch.Tensor | None = None, pro_b: torch.Tensor | None = None,
                 ln: tuple | None = None, grouped_input: bool = False, classes: int = 0,
                 bins: torch.Tensor | None = None, action: torch.Tensor | None = None,
                 action_proj: tuple | None = None, action_discrete: bool = True,
                 store_pro: bool = False, eps: float = 1e-5, unimix: float = 0.0,
                 out_dtype: torch.dtype = torch.float32, dot: bool | None = None,
                 stats_in: torch.Tensor | None = None, stats_out: torch.Tensor | None = None):
    """One fused layer; see the module docstring. Returns (out, aux) (aux may be None).

    Args:
        x: input rows [B, KD] (or [B, G*KD] with grouped_input: group g reads its own slice).
        weights: 1 to 3 weight matrices [N, KD (+ DA)] of the same shape (one per group); biases:
            matching bias vectors or Nones.
        pro: PRO_NONE, PRO_SYMLOG (pro_a = loc, pro_b = scale), PRO_LN_SILU (ln = (gammas,
            betas), one pair per group, of the LayerNorm that ends the previous hidden layer),
            PRO_RMS (pro_a = the RMSNorm weight; store_pro writes the normed rows to aux, float32).
        epi: EPI_NONE (out [B, G*N] in out_dtype), EPI_PROBS (`classes` classes per latent
            variable, one variable per tile, several from TILES_FROM rows; unimix-mixed
            probabilities), EPI_TWOHOT (bins: out [B] = symexp of the
            expected bin, aux [B, N] the logits). The heads' EPI_LOGP and EPI_SIGMOID run in
            `heads_out`, the launch they share with the two-hot.
        action, action_proj: with action_proj = (proj weight [DA, NA], proj bias [DA]) the layer
            also adds W[:, KD:KD+DA] @ (proj(one-hot(action)) or proj(action features)); action is
            int64 [B] (discrete) or float [B, NA] features.
        eps: the prologue norm's epsilon; unimix: the categorical's uniform mix.
        dot: multiply with `tl.dot` in IEEE float32 (row blocks of 16 and more) or, False, by a
            broadcast product (4 rows per program); None picks the dot above SMALL_ROWS rows.
        stats_out: a [B, G, 2] float32 buffer (`ln_stats_buffer`) for each row's and group's
            (mean, variance) of this layer's outputs: what the next layer's LayerNorm prologue
            would compute, passed to it as stats_in, which then reads its input once instead of
            three times. Only where `ln_stats_buffer` gave one (one tile per group's row).
    """
    g = len(weights)
    if not 1 <= g <= 3 or len(biases) != g:
        raise ValueError(f"fused_linear takes 1 to 3 groups with one bias each, got {g} and {len(biases)}")
    b = x.shape[0]
    n = weights[0].shape[0]
    na, da = (action_proj[0].shape[1], action_proj[0].shape[0]) if action_proj is not None else (0, 0)
    kd = weights[0].shape[1] - da
    xs = kd if grouped_input else 0
    if x.dim() != 2 or x.stride(1) != 1 or x.shape[1] < (g - 1) * xs + kd:
        raise ValueError(f"x must be [B, >= {(g - 1) * xs + kd}] with unit last stride, got {tuple(x.shape)}")
    for wt in weights:
        if wt.shape != weights[0].shape or wt.stride(1) != 1 or wt.stride(0) != weights[0].stride(0):
            raise ValueError("every group's weight must have the same shape and strides, unit last stride")
    dev = x.device
    if epi not in (EPI_NONE, EPI_PROBS, EPI_TWOHOT):
        raise ValueError(f"fused_linear's epilogue is EPI_NONE, EPI_PROBS or EPI_TWOHOT, got {epi} "
                         "(the log-probability and sigmoid ones run in heads_out)")
    if store_pro and epi == EPI_TWOHOT:
        raise ValueError("store_pro and the two-hot epilogue would both write aux (the prologue, the logits)")
    tile = classes if epi == EPI_PROBS else None
    aux = None
    if epi == EPI_TWOHOT:
        if g != 1 or action_proj is not None:
            raise ValueError("the two-hot epilogue takes one group and no action")
        out = _alloc(b, dtype=torch.float32, device=dev)
        aux = _alloc(b, n, dtype=torch.float32, device=dev)
    else:
        out = _alloc(b, g * n, dtype=out_dtype if epi == EPI_NONE else torch.float32, device=dev)
    if store_pro:
        aux = _alloc(b, kd, dtype=torch.float32, device=dev)
    if b == 0:
        return out, aux
    c = _plan(b, n, kd, tile, dot)
    _check_stats(stats_in, stats_out, c, b, g, n, pro, epi, out.dtype)
    pdl, extra = launch_kwargs(dev)
    if c["rows"]:
        _rows_linear(x, weights, biases, out, aux, c, kd=kd, na=na, da=da, pro=pro, epi=epi, pro_a=pro_a,
                     pro_b=pro_b, ln=ln, xs=xs, bins=bins, action=action, action_proj=action_proj, action_discrete=action_discrete,
                     store_pro=store_pro, eps=eps, unimix=unimix, pdl=pdl, extra=extra)
        return out, aux
    tile, tiles, block_m = c["tile"], c["tiles"], c["block_m"]
    ws, bs, gam, bet, act, pw, pbias = _group_args(x, weights, biases, ln, action, action_proj)
    dummy = out
    _fused_linear_kernel[(g * tiles, triton.cdiv(b, block_m))](
        x, x.stride(0), act, act.stride(0) if act.dim() > 0 else 0,
        pro_a if pro_a is not None else dummy, pro_b if pro_b is not None else dummy,
        *ws, *bs, *gam, *bet, weights[0].stride(0), weights[0].stride(1), pw, pw.stride(0), pbias,
        out, out.stride(0), aux if aux is not None else dummy, aux.stride(0) if aux is not None else 0,
        bins if bins is not None else dummy, _counters(dev, triton.cdiv(b, block_m), "mlp"),
        b, float(eps), float(unimix),
        KD=kd, XS=xs, N=n, TILE=tile, TILES=tiles, NA=na, DA=da, ACT_DISCRETE=bool(action_discrete),
        PRO=pro, EPI=epi, STORE_PRO=bool(store_pro), HAS_BIAS=biases[0] is not None,
        BLOCK_M=block_m, BLOCK_N=c["block_n"], BLOCK_K=c["block_k"], BLOCK_S=c["block_s"], BLOCK_R=c["block_r"],
        BLOCK_NA=max(16, triton.next_power_of_2(max(na, 1))), BLOCK_DA=max(16, triton.next_power_of_2(max(da, 1))),
        DOT=_dot_mode(c["dot"]), PDL=pdl, CLS=classes if epi == EPI_PROBS else tile,
        st_in_ptr=stats_in if stats_in is not None else dummy, st_out_ptr=stats_out if stats_out is not None else dummy,
        stride_st=2 * g, STATS_IN=stats_in is not None, STATS_OUT=stats_out is not None, num_warps=c["warps"],
        num_stages=c["stages"], **extra,
    )
    return out, aux


def ln_stats_buffer(b: int, n: int, groups: int, device) -> torch.Tensor | None:
    """A [b, groups, 2] buffer for `fused_linear`'s stats_out where a layer of n outputs per group
    runs in TILE_PLAN's tiles with one tile per group's row (from TILES_FROM rows, n at most
    block_n): its epilogue holds whole rows, so it can leave the next LayerNorm's statistics.
    Else None (the next layer computes them from its input)."""
    if b < TILES_FROM or triton.next_power_of_2(n) > TILE_PLAN["block_n"]:
        return None
    return _alloc(b, groups, 2, dtype=torch.float32, device=device)


def _check_stats(stats_in, stats_out, c, b, g, n, pro, epi, out_dtype) -> None:
    """Raise ValueError unless the LayerNorm statistics asked of a launch fit its plan `c`."""
    for name, st in (("stats_in", stats_in), ("stats_out", stats_out)):
        if st is not None and (st.shape != (b, g, 2) or st.dtype != torch.float32 or not st.is_contiguous()):
            raise ValueError(f"{name} must be a contiguous float32 [{b}, {g}, 2] buffer, got "
                             f"{st.dtype} {tuple(st.shape)}")
        if st is not None and c["rows"]:
            raise ValueError(f"{name} is not taken by kernels.mlp.rows (the plan at {b} rows)")
    if stats_in is not None and pro != PRO_LN_SILU:
        raise ValueError("stats_in is the LayerNorm prologue's statistics: it needs pro=PRO_LN_SILU")
    if stats_out is not None and (epi != EPI_NONE or c["tiles"] != 1 or c["tile"] < n or out_dtype != torch.float32):
        raise ValueError("stats_out needs one float32 tile per group's row and no epilogue "
                         f"(tiles {c['tiles']} of {c['tile']} for {n} outputs, epilogue {epi}, {out_dtype})")


def _group_args(x, weights, biases, ln, action, action_proj):
    """A layer launch's per-group pointers padded to three groups (weights, biases, LayerNorm
    gammas and betas; absent ones point at something valid the kernel never reads), the action
    and its projection (x where there is none)."""
    g = len(weights)
    ws = list(weights) + [weights[0]] * (3 - g)
    bs = [bb if bb is not None else ws[0] for bb in biases] + [ws[0]] * (3 - g)
    gam, bet = (list(ln[0]), list(ln[1])) if ln is not None else ([x], [x])
    gam += [gam[0]] * (3 - len(gam))
    bet += [bet[0]] * (3 - len(bet))
    act = action if action is not None else x
    pw, pbias = action_proj if action_proj is not None else (x, x)
    return ws, bs, gam, bet, act, pw, pbias


def _plan(b: int, n: int, kd: int, fixed_tile: int | None, dot: bool | None, warps: int | None = None,
          heads: bool = False) -> dict:
    """Block sizes of one layer of `b` rows, `n` outputs and `kd` inputs. fixed_tile: the columns
    one program must own together (a latent variable's classes, several variables from
    TILES_FROM rows; the continue logit), else None (any split).
    warps: force the program's warps (a launch shared by several layers), else chosen here.
    heads: a layer of `heads_out`'s launch (HEADS_TILE_PLAN from TILES_FROM rows)."""
    from worldssm.kernels.mlp.rows import ROWS_MAX_KD

    block_k = min(64, max(16, triton.next_power_of_2(kd)))  # the row is walked block_k columns at a time
    tile = fixed_tile if fixed_tile is not None else min(32 if b <= 64 else 64, max(16, triton.next_power_of_2(n)))
    dot = b > SMALL_ROWS if dot is None else bool(dot)
    if dot and b >= TILES_FROM:
        return _tile_plan(b, n, kd, fixed_tile, HEADS_TILE_PLAN if heads else TILE_PLAN)
    many = dot and b >= ROWS_FROM
    if many and kd <= ROWS_MAX_KD:  # kernels.mlp.rows: whole input rows per program
        return dict(tile=tile, tiles=triton.cdiv(n, tile), block_n=max(16, triton.next_power_of_2(tile)),
                    dot=True, rows=True)
    if many and fixed_tile is None and n <= 256:  # one tile of every output: each input row read once
        tile = n
    block_n = max(16, triton.next_power_of_2(tile))
    if dot:
        block_m = 16 if b <= 16 else (32 if b <= 256 or block_n > 64 else 64)
        warps = warps or (8 if block_n > 64 else 4)
    else:
        # The broadcast product holds [block_m, block_k, block_n]: at most 64 values per thread.
        # Each K chunk is a dependent round trip to memory, so the whole row goes in one chunk
        # where it fits, and the columns are cut narrower instead (more programs, each with a
        # thinner weight tile); a fixed tile (one latent variable) takes 8 warps instead.
        block_m = triton.next_power_of_2(min(b, 4))
        block_k = min(1024, max(16, triton.next_power_of_2(kd)))
        warps = warps or (4 if fixed_tile is None else 8)
        if fixed_tile is None:
            tile = block_n = max(8, min(block_n, 64 * 32 * warps // (block_m * block_k)))
        block_k = min(block_k, max(16, 64 * 32 * warps // (block_m * block_n)))
    return dict(tile=tile, tiles=triton.cdiv(n, tile), block_m=block_m, block_n=block_n, block_k=block_k,
                **_chunks(n, kd, block_m), warps=warps, dot=dot, rows=False, stages=3)  # 3: Triton's default


def _chunks(n: int, kd: int, block_m: int) -> dict:
    """The row-statistics pass's chunk of the input (block_s) and the two-hot's chunk of the bins
    (block_r): as wide as 4K values per program allow."""
    return dict(block_s=max(16, min(triton.next_power_of_2(kd), 4096 // block_m)),
                block_r=max(16, min(triton.next_power_of_2(n), 4096 // block_m)))


def _tile_plan(b: int, n: int, kd: int, fixed_tile: int | None, t: dict) -> dict:
    """`_plan` from TILES_FROM rows: the blocks of plan `t` (TILE_PLAN, or HEADS_TILE_PLAN); a
    tile holds as many latent variables (fixed_tile classes, a power of two dividing n) as
    block_n takes, or one continue logit."""
    cap = t["block_n"]
    if fixed_tile is None:
        tile = min(cap, max(16, triton.next_power_of_2(n)))
    elif fixed_tile == 1 or fixed_tile & (fixed_tile - 1) or fixed_tile > cap or n % fixed_tile:
        tile = fixed_tile  # one variable per tile, or the continue logit
    else:
        # The most variables per tile that divide n, in a power-of-two tile of at least 16 columns
        # (`_store_tile` reshapes a whole BLOCK_N tile); else one variable per tile.
        tile = cap
        while tile > fixed_tile and n % tile:
            tile //= 2
        if tile < 16:
            tile = fixed_tile
    return dict(tile=tile, tiles=triton.cdiv(n, tile), block_m=t["block_m"],
                block_n=max(16, triton.next_power_of_2(tile)),
                block_k=min(t["block_k"], max(16, triton.next_power_of_2(kd))), **_chunks(n, kd, t["block_m"]),
                warps=t["warps"], dot=True, rows=False, stages=t["stages"])


def _rows_linear(x, weights, biases, out, aux, c, *, kd, na, da, pro, epi, pro_a, pro_b, ln, xs, bins, action,
                 action_proj, action_discrete, store_pro, eps, unimix, pdl, extra):
    """`fused_linear` through `kernels.mlp.rows` (its plan `c` said rows; kd, na, da: the shapes it read)."""
    from worldssm.kernels.mlp.rows import _rows_linear_kernel, rows_plan

    g, b = len(weights), x.shape[0]
    rp = rows_plan(b, kd, g)
    split = 1 if epi == EPI_TWOHOT else min(rp["split"], c["tiles"])
    ws, bs, gam, bet, act, pw, pbias = _group_args(x, weights, biases, ln, action, action_proj)
    _rows_linear_kernel[(g * split, rp["blocks"])](
        x, x.stride(0), act, act.stride(0) if act.dim() > 0 else 0,
        pro_a if pro_a is not None else out, pro_b if pro_b is not None else out,
        *ws, *bs, *gam, *bet, weights[0].stride(0), weights[0].stride(1), pw, pw.stride(0), pbias,
        out, out.stride(0), aux if aux is not None else out, aux.stride(0) if aux is not None else 0,
        bins if bins is not None else out, b, float(eps), float(unimix),
        KD=kd, XS=xs, N=weights[0].shape[0], TILE=c["tile"], TILES=c["tiles"], SPLIT=split, NA=na, DA=da,
        ACT_DISCRETE=bool(action_discrete), PRO=pro, EPI=epi, STORE_PRO=bool(store_pro),
        HAS_BIAS=biases[0] is not None, BLOCK_M=rp["block_m"], BLOCK_KD=rp["block_kd"], BLOCK_N=c["block_n"],
        BLOCK_NA=max(16, triton.next_power_of_2(max(na, 1))), BLOCK_DA=max(16, triton.next_power_of_2(max(da, 1))),
        DOT=_dot_mode(True), PDL=pdl, num_warps=rp["warps"], num_stages=rp["stages"], **extra,
    )


@triton.jit
def _heads_out_kernel(
    x_ptr, stride_x, stride_w, bins_ptr, count_ptr, rows, eps, unimix,
    w0, b0, ga0, be0, out0, stride_o0, aux0, stride_a0,
    w1, b1, ga1, be1, out1, stride_o1, aux1, stride_a1,
    w2, b2, ga2, be2, out2, stride_o2, aux2, stride_a2,
    KD: tl.constexpr, N0: tl.constexpr, TILE0: tl.constexpr, TILES0: tl.constexpr, BN0: tl.constexpr,
    BK0: tl.constexpr, N1: tl.constexpr, TILE1: tl.constexpr, TILES1: tl.constexpr, BN1: tl.constexpr,
    BK1: tl.constexpr, BR1: tl.constexpr, BN2: tl.constexpr, BK2: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_S: tl.constexpr, DOT: tl.constexpr, PDL: tl.constexpr, CLS0: tl.constexpr,
    st_ptr, STATS: tl.constexpr,
):
    # Programs [0, TILES0): the prior's log-probabilities, one latent variable each (from
    # TILES_FROM rows, TILE0 // CLS0 variables each); the next
    # TILES1: the reward's bins; the last one: the continue logit. Head i reads its slice
    # [i*KD, (i+1)*KD) of the shared hidden rows, through its own LayerNorm + SiLU.
    t = tl.program_id(0)
    # Arguments after x: no action (act, its stride, pa, pb), the head's weight, bias and
    # LayerNorm three times (group 0 only), strides, no action projection, the outputs, bins and
    # counter; constexprs KD, XS=0, N, TILE, TILES, NA=0, DA=0, ACT_DISCRETE, PRO_LN_SILU, the
    # epilogue, STORE_PRO=False, HAS_BIAS, blocks, DOT, PDL, the head's LayerNorm statistics
    # (st_ptr [B, 3, 2]: head i's at 2*i, read where STATS) and the program offset.
    if t < TILES0:
        _fused_linear_kernel(
            x_ptr, stride_x, x_ptr, 0, x_ptr, x_ptr, w0, w0, w0, b0, b0, b0, ga0, ga0, ga0, be0, be0, be0,
            stride_w, 0, x_ptr, 0, x_ptr, out0, stride_o0, aux0, stride_a0, bins_ptr, count_ptr, rows, eps, unimix,
            KD, 0, N0, TILE0, TILES0, 0, 0, True, 2, 2, False, True,
            BLOCK_M, BN0, BK0, BLOCK_S, 16, 16, 16, DOT, PDL, CLS0, st_ptr, st_ptr, 6, STATS, False, 0)
    elif t < TILES0 + TILES1:
        _fused_linear_kernel(
            x_ptr + KD, stride_x, x_ptr, 0, x_ptr, x_ptr, w1, w1, w1, b1, b1, b1, ga1, ga1, ga1, be1, be1, be1,
            stride_w, 0, x_ptr, 0, x_ptr, out1, stride_o1, aux1, stride_a1, bins_ptr, count_ptr, rows, eps, unimix,
            KD, 0, N1, TILE1, TILES1, 0, 0, True, 2, 3, False, True,
            BLOCK_M, BN1, BK1, BLOCK_S, BR1, 16, 16, DOT, PDL, TILE1, st_ptr + 2, st_ptr, 6, STATS, False, TILES0)
    else:
        _fused_linear_kernel(
            x_ptr + 2 * KD, stride_x, x_ptr, 0, x_ptr, x_ptr, w2, w2, w2, b2, b2, b2, ga2, ga2, ga2, be2, be2, be2,
            stride_w, 0, x_ptr, 0, x_ptr, out2, stride_o2, aux2, stride_a2, bins_ptr, count_ptr, rows, eps, unimix,
            KD, 0, 1, 1, 1, 0, 0, True, 2, 4, False, True,
            BLOCK_M, BN2, BK2, BLOCK_S, 16, 16, 16, DOT, PDL, 1, st_ptr + 4, st_ptr, 6, STATS, False,
            TILES0 + TILES1)


def heads_out(hid: torch.Tensor, layers, *, classes: int, unimix: float, bins: torch.Tensor, eps: float,
              dot: bool | None = None, stats: torch.Tensor | None = None):
    """The last layers of the prior, reward and continue heads in one launch.

    `hid` [B, 3*KD] holds the three heads' last hidden rows before their LayerNorm (head i in
    columns [i*KD, (i+1)*KD)); `layers` is ((linear, layernorm) of the prior, of the reward, of the
    continue head). Returns (prior log-probabilities [B, V*classes], prior probabilities, reward
    [B] (symexp of the two-hot mean over `bins`), reward logits [B, len(bins)], continue
    probability [B], continue logit [B]): what three `fused_linear` calls with EPI_LOGP,
    EPI_TWOHOT and EPI_SIGMOID return, in one launch instead of three. `stats`: the [B, 3, 2]
    LayerNorm statistics the layer that wrote `hid` left (`fused_linear`'s stats_out), or None.
    """
    (l0, n0), (l1, n1), (l2, n2) = layers
    b, kd = hid.shape[0], l0.weight.shape[1]
    if hid.dim() != 2 or hid.stride(1) != 1 or hid.shape[1] < 3 * kd:
        raise ValueError(f"hid must be [B, >= {3 * kd}] with unit last stride, got {tuple(hid.shape)}")
    for lin in (l0, l1, l2):
        if lin.weight.shape[1] != kd or not lin.weight.is_contiguous() or lin.bias is None:
            raise ValueError(f"every head's last layer must be a contiguous Linear of {kd} inputs with a bias")
    if l2.weight.shape[0] != 1 or l0.weight.shape[0] % classes or l1.weight.shape[0] != bins.numel():
        raise ValueError("heads_out takes the prior (a multiple of `classes` outputs), the reward (one per bin) "
                         "and the continue head (one output)")
    if not eps == n0.eps == n1.eps == n2.eps:
        raise ValueError(f"the heads' LayerNorms must share eps={eps}, got {n0.eps}, {n1.eps}, {n2.eps}")
    dev = hid.device
    nv, nb = l0.weight.shape[0], l1.weight.shape[0]
    logp, probs = _alloc(b, nv, dtype=torch.float32, device=dev), _alloc(b, nv, dtype=torch.float32, device=dev)
    reward, logits = _alloc(b, dtype=torch.float32, device=dev), _alloc(b, nb, dtype=torch.float32, device=dev)
    cont, cont_logit = _alloc(b, dtype=torch.float32, device=dev), _alloc(b, dtype=torch.float32, device=dev)
    if b == 0:
        return logp, probs, reward, logits, cont, cont_logit
    p0 = _plan(b, nv, kd, classes, dot, heads=True)
    _check_stats(stats, None, p0, b, 3, kd, PRO_LN_SILU, EPI_NONE, torch.float32)
    if p0["rows"]:
        _rows_heads(hid, layers, kd, bins, p0, eps, unimix, logp, probs, reward, logits, cont, cont_logit)
        return logp, probs, reward, logits, cont, cont_logit
    warps = p0["warps"]  # one launch: one warp count, each layer's blocks planned for it
    p1, p2 = _plan(b, nb, kd, None, dot, warps, heads=True), _plan(b, 1, kd, 1, dot, warps, heads=True)
    pdl, extra = launch_kwargs(dev)
    _heads_out_kernel[(p0["tiles"] + p1["tiles"] + 1, triton.cdiv(b, p0["block_m"]))](
        hid, hid.stride(0), kd, bins, _counters(dev, triton.cdiv(b, p0["block_m"]), "mlp"), b, float(eps),
        float(unimix),
        l0.weight, l0.bias, n0.weight, n0.bias, logp, logp.stride(0), probs, probs.stride(0),
        l1.weight, l1.bias, n1.weight, n1.bias, reward, 1, logits, logits.stride(0),
        l2.weight, l2.bias, n2.weight, n2.bias, cont, 1, cont_logit, 1,
        KD=kd, N0=nv, TILE0=p0["tile"], TILES0=p0["tiles"], BN0=p0["block_n"], BK0=p0["block_k"],
        N1=nb, TILE1=p1["tile"], TILES1=p1["tiles"], BN1=p1["block_n"], BK1=p1["block_k"], BR1=p1["block_r"],
        BN2=p2["block_n"], BK2=p2["block_k"], BLOCK_M=p0["block_m"], BLOCK_S=p0["block_s"], DOT=_dot_mode(p0["dot"]),
        PDL=pdl, CLS0=classes, st_ptr=stats if stats is not None else hid, STATS=stats is not None,
        num_warps=warps, num_stages=p0["stages"], **extra,
    )
    return logp, probs, reward, logits, cont, cont_logit


def _rows_heads(hid, layers, kd, bins, p0, eps, unimix, logp, probs, reward, logits, cont, cont_logit):
    """`heads_out` through `kernels.mlp.rows` (its plan `p0` said rows)."""
    from worldssm.kernels.mlp.rows import _rows_heads_kernel, rows_plan

    (l0, n0), (l1, n1), (l2, n2) = layers
    b, nb = hid.shape[0], l1.weight.shape[0]
    rp = rows_plan(b, kd, 3)
    # The prior's variables in shares about as long as the reward program's walk over every bin.
    split0 = max(1, min(p0["tiles"], triton.cdiv(l0.weight.shape[0], nb)))
    pdl, extra = launch_kwargs(hid.device)
    _rows_heads_kernel[(split0 + 2, rp["blocks"])](
        hid, hid.stride(0), kd, bins, b, float(eps), float(unimix),
        l0.weight, l0.bias, n0.weight, n0.bias, logp, logp.stride(0), probs, probs.stride(0),
        l1.weight, l1.bias, n1.weight, n1.bias, reward, 1, logits, logits.stride(0),
        l2.weight, l2.bias, n2.weight, n2.bias, cont, 1, cont_logit, 1,
        KD=kd, N0=l0.weight.shape[0], TILE0=p0["tile"], TILES0=p0["tiles"], SPLIT0=split0, BN0=p0["block_n"],
        N1=nb, TILE1=64, TILES1=triton.cdiv(nb, 64), BN1=64, BLOCK_M=rp["block_m"], BLOCK_KD=rp["block_kd"],
        DOT=_dot_mode(True), PDL=pdl, num_warps=rp["warps"], num_stages=rp["stages"], **extra,
    )
