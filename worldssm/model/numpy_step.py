"""The world model's step in numpy: the engine's CPU inference path.

On CPU at the batch sizes of a simulation tick (tens of agents) the model's step is bound by
per-op dispatch, not arithmetic: the DEBUG model's observe is ~160 PyTorch ops at 1-3 us each,
and numpy's ops on small arrays cost a third to a half of that. `worldssm bench tick` times both
steps side by side (`engine_observe_ms` in `tests/bench/results/tick-*.json`). At the batch
sizes of dreams and planners (hundreds to thousands of rows) the per-element cost rules instead,
and there the step hands its large arrays to PyTorch's fused, threaded CPU ops on the same
memory (`TORCH_FROM`, `ONE_THREAD_MNK`): 1,024 SMALL dreams step about twice as fast as in
numpy alone.

`NumpyStep` mirrors `WorldModel.observe_slots` / `imagine_slots` / `decode` with the expected
latent (no sampling) for vector observations and the Mamba-2 backbone with float32 weights and states:
the same formulas, float32 throughout. Results agree with the PyTorch path to float32 rounding,
not bit for bit: the products are BLAS's and the reductions numpy's or PyTorch's, and two
products are regrouped (a discrete action's share of the input projection is a table lookup; at
few rows the prior, reward and continue heads run as one stack). It reads the model only through
`WorldModel.step_weights` (the model's one list of the arrays a step reads), and takes that view
again when any parameter's version counter moved (an optimizer step or `load_state_dict` in
place). It writes the backbone states of a slab in place. What it cannot run, `supports` says,
and the engine then runs the PyTorch path: `Engine.impl` records which one runs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from worldssm.model.weights import MLPWeights, StepWeights

F32 = np.float32

# Element-wise work on arrays of at least this many elements goes through PyTorch's CPU ops on
# views of the same memory: one fused pass where PyTorch has the op (LayerNorm with its affine,
# SiLU, softmax, RMSNorm) where numpy makes one pass per ufunc on one thread, and threaded. On the
# 2-core AVX2 machine, LayerNorm + SiLU over [3, 1024, 256] took 11.4 ms in numpy and 0.74 ms
# this way. SiLU alone breaks even near 4,096 elements, but a step's first PyTorch op also wakes
# PyTorch's threads: at 8 SMALL rows a limit of 4,096 cost 0.3 ms a step against 16,384. Smaller
# arrays stay in numpy, whose calls cost less. Both agree to float32 rounding:
# tests/model/test_numpy_step.py runs every test with everything in numpy, everything in PyTorch,
# every product in pieces, and by size.
TORCH_FROM = 1 << 14
# OpenBLAS's default threshold for a threaded product (GEMM_MULTITHREAD_THRESHOLD 4 x 65,536 =
# M*N*K), and how many one-thread pieces a larger product may be cut into; see `_mm`.
ONE_THREAD_MNK = 1 << 18
ONE_THREAD_PIECES = 4
# Rows a step takes in one pass (`_in_passes`).
ROWS_PER_PASS = 2048


def _tensor(x: np.ndarray) -> torch.Tensor:
    """A tensor over x's memory (over a copy when x is read-only, as PyTorch cannot mark it so)."""
    return torch.from_numpy(x if x.flags.writeable else x.copy())


def _mm(x: np.ndarray, w: tuple) -> np.ndarray:
    """x @ w, w as `_pair`'s (array, tensor). OpenBLAS must never thread: its threads spin after
    each threaded product and PyTorch's after each threaded op, so two pools in one step fought
    over the cores (on 2 cores, 64 dreams went from 3 to 80 ms a step). So a product of at most
    `ONE_THREAD_MNK` multiply-adds per matrix is numpy's (OpenBLAS runs those on one thread, and
    its call costs less); a larger one over few rows is numpy's in at most `ONE_THREAD_PIECES`
    column pieces of that size (PyTorch's products cost more there: at 8 SMALL rows a step took
    1.36 ms with them, 1.05 ms in pieces); any other is PyTorch's."""
    a, t = w
    k, n = a.shape[-2:] if a.ndim > 1 else (a.shape[0], 1)
    m = x.shape[-2]
    if m * k * n <= ONE_THREAD_MNK:
        return x @ a
    cols = ONE_THREAD_MNK // (m * k)  # columns of one one-thread product
    if a.ndim > 1 and cols * ONE_THREAD_PIECES >= n:
        return np.concatenate([x @ a[..., j:j + cols] for j in range(0, n, cols)], -1)
    return (_tensor(x) @ t).numpy()


def supports(model, sample: bool, device: torch.device, state_dtype: str | None = None) -> str | None:
    """None when `NumpyStep` can run this model, else the reason it cannot. `state_dtype` is how
    the engine stores the SSM states (None: the model's config); the step reads float32 rows."""
    if device.type != "cpu":
        return f"the engine is on {device}"
    if sample:
        return "latents are sampled (the numpy path takes their expectation)"
    states = state_dtype or model.cfg.backbone.state_dtype
    if states != "float32":
        return f"{states} states"
    return model.why_no_step_weights()


def _as_slice(slots: np.ndarray) -> slice | None:
    """`slots` as a slice when they are consecutive and ascending, else None."""
    if slots.size == 0 or int(slots[-1]) - int(slots[0]) != slots.size - 1:
        return None
    if slots.size > 2 and not (np.diff(slots) == 1).all():
        return None
    return slice(int(slots[0]), int(slots[-1]) + 1)


def _symlog(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def _symexp(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.expm1(np.abs(x))


def _silu(x: np.ndarray) -> np.ndarray:
    if x.size >= TORCH_FROM:
        return F.silu(_tensor(x)).numpy()
    t = np.exp(-x)
    t += 1.0
    return x / t


def _layer_norm_silu(y: np.ndarray, norm: tuple, eps: float) -> np.ndarray:
    """silu(LayerNorm(y)) over the last dim, in place on `y`. `norm`: `_norm`'s gain and bias."""
    g, beta = norm[:2]
    y -= y.sum(-1, keepdims=True) * F32(1.0 / y.shape[-1])
    var = np.einsum("...i,...i->...", y, y)[..., None] * F32(1.0 / y.shape[-1])
    y *= 1.0 / np.sqrt(var + F32(eps))
    y *= g
    y += beta
    return _silu(y)


def _pair(w: np.ndarray | torch.Tensor) -> tuple:
    """A weight as (array, tensor) over one writeable float32 memory: a copy of an array (the
    step's weight arrays are read-only views), a tensor as it is."""
    t = w if isinstance(w, torch.Tensor) else torch.from_numpy(np.array(w, dtype=F32))
    return t.numpy(), t


def _norm(g: np.ndarray, beta: np.ndarray) -> tuple:
    """A LayerNorm's gain and bias: as arrays, then as tensors."""
    (g, tg), (beta, tbeta) = _pair(g), _pair(beta)
    return g, beta, tg, tbeta


class _MLP:
    """An `nets.mlp`: (Linear -> LayerNorm -> SiLU) x L, then Linear."""

    def __init__(self, w: MLPWeights):
        self.blocks = [(_pair(blk.linear.w), _pair(blk.linear.b), _norm(blk.norm_weight, blk.norm_bias),
                        blk.norm_eps) for blk in w.hidden]
        self.out = (_pair(w.out.w), _pair(w.out.b))
        self.width = max([blk[0][0].shape[1] for blk in self.blocks], default=self.out[0][0].shape[1])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] * self.width >= TORCH_FROM:
            return self.torch(_tensor(x)).numpy()
        for w, b, norm, eps in self.blocks:
            y = _mm(x, w)
            y += b[0]
            x = _layer_norm_silu(y, norm, eps)
        w, b = self.out
        y = _mm(x, w)
        y += b[0]
        return y

    def torch(self, x: torch.Tensor) -> torch.Tensor:
        """The same on a tensor, three fused ops a layer (product with bias, LayerNorm, SiLU)."""
        for w, b, norm, eps in self.blocks:
            x = F.silu(F.layer_norm(torch.addmm(b[1], x, w[1]), (w[1].shape[1],), norm[2], norm[3], eps),
                       inplace=True)
        w, b = self.out
        return torch.addmm(b[1], x, w[1])


class _Heads:
    """Several `nets.mlp`s of one shape reading the same input. Few rows: run as one stack, each
    layer one batched product over the heads ([M, B, in] @ [M, in, out]) with the output layers
    padded to the widest one (fewer, larger calls). Many rows: each head on its own, as fused
    PyTorch ops (`_MLP.torch`). Returns each head's output [B, out_m], in the order given."""

    def __init__(self, weights: list[MLPWeights]):
        self.mlps = [_MLP(w) for w in weights]
        self.blocks = []
        for layer in zip(*(m.blocks for m in self.mlps)):
            w = _pair(torch.stack([blk[0][1] for blk in layer]))  # [M, in, w]
            b = np.stack([blk[1][0] for blk in layer])[:, None]  # [M, 1, w]
            g, beta = (np.stack([blk[2][i] for blk in layer])[:, None] for i in (0, 1))
            self.blocks.append((w, b, _norm(g, beta), layer[0][3]))
        self.sizes = [m.out[0][0].shape[1] for m in self.mlps]
        width = max(self.sizes)
        self.w_out = _pair(torch.stack([F.pad(m.out[0][1], (0, width - n)) for m, n in zip(self.mlps, self.sizes)]))
        self.b_out = np.zeros((len(self.mlps), 1, width), F32)
        for i, m in enumerate(self.mlps):
            self.b_out[i, 0, :self.sizes[i]] = m.out[1][0]
        self.width = len(self.mlps) * max(m.width for m in self.mlps)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        if x.shape[0] * self.width >= TORCH_FROM:
            t = _tensor(x)
            return [m.torch(t).numpy() for m in self.mlps]
        for i, (w, b, norm, eps) in enumerate(self.blocks):
            y = _mm(x if i else x[None], w)  # [M, B, w]
            y += b
            x = _layer_norm_silu(y, norm, eps)
        y = _mm(x, self.w_out)
        y += self.b_out
        return [y[i, :, :n] for i, n in enumerate(self.sizes)]


def _conv(conv_slab: np.ndarray, new: np.ndarray, slots: np.ndarray, rows: slice | None,
          reset: np.ndarray | None, weight: tuple, bias: tuple) -> np.ndarray:
    """silu(the causal depthwise convolution over each row's last K-1 inputs, kept in `conv_slab`
    [S, K-1, Cd], and `new` [B, Cd]); shifts `new` into rows `slots` of the slab (`rows`: the same
    rows as a slice, or None). A reset row's kept inputs are read as zeros. `weight` [K, Cd] and
    `bias` [Cd] as `_pair`s."""
    if new.size * weight[0].shape[0] >= TORCH_FROM:
        cs, w = torch.from_numpy(conv_slab), weight[1]
        at = rows if rows is not None else torch.from_numpy(slots)
        window = torch.cat([cs[at], _tensor(new)[:, None]], 1)  # [B, K, Cd], a copy
        if reset is not None:
            window[torch.from_numpy(reset), :-1] = 0.0
        cs[at] = window[:, 1:]
        xbc = torch.addcmul(bias[1], window[:, 0], w[0])
        for k in range(1, w.shape[0]):
            xbc.addcmul_(window[:, k], w[k])
        return F.silu(xbc, inplace=True).numpy()
    old = conv_slab[slots]  # [B, K-1, Cd]
    if reset is not None:
        old[reset] = 0.0  # a reset row's state is never read
    window = np.concatenate([old, new[:, None]], 1)  # [B, K, Cd]
    conv_slab[slots] = window[:, 1:]
    xbc = np.einsum("bkc,kc->bc", window, weight[0])
    xbc += bias[0]
    return _silu(xbc)


def _in_passes(step, *rows: np.ndarray):
    """`step(*rows)`, over at most `ROWS_PER_PASS` rows at a time when there are more (every row
    steps on its own), its outputs concatenated: a pass's intermediate arrays then stay in the
    CPU's caches. On the 2-core machine, 16,384 SMALL dreams took 464 ms a step in one pass and
    317-331 ms in passes of 2,048 rows."""
    b = rows[0].shape[0]
    if b <= ROWS_PER_PASS:
        return step(*rows)
    outs = [step(*(r[i:i + ROWS_PER_PASS] for r in rows)) for i in range(0, b, ROWS_PER_PASS)]
    if isinstance(outs[0], tuple):
        return tuple(np.concatenate(parts) for parts in zip(*outs))
    return np.concatenate(outs)


class NumpyStep:
    """The world model's one-step inference in numpy (see the module docstring).

    Args:
        model: a `WorldModel` on CPU for which `supports(...)` is None. The step reads it through
            `model.step_weights()` only, and again after an in-place change of its parameters.
    """

    def __init__(self, model):
        self._model = model
        self._params = list(model.parameters()) + list(model.buffers())  # observation statistics too
        self._version = None
        self._sync()

    def _sync(self) -> None:
        """(Re)build the numpy weights when any parameter or buffer changed in place since the last
        build (an optimizer step, `load_state_dict`, `set_obs_stats`): each tensor's version
        counter says so."""
        version = tuple(p._version for p in self._params)
        if version == self._version:
            return
        self._load(self._model.step_weights())
        self._version = version

    def _load(self, w: StepWeights) -> None:
        """Lay the view's arrays out for the step: the three heads stacked, a discrete action's
        share of the input projection as a table, D as a column."""
        self.v, self.k = w.latent_vars, w.latent_classes
        self.h, self.p, self.n = w.n_heads, w.head_dim, w.d_state
        self.eps, self.obs_shape = w.norm_eps, w.obs_shape
        self.unimix = w.unimix
        self.encoder, self.decoder = _MLP(w.encoder), _MLP(w.decoder)
        self.obs_loc, self.obs_scale = w.obs_loc, w.obs_scale
        self.heads = _Heads([w.prior_head, w.reward_head, w.cont_head])
        act, vk = w.action, self.v * self.k
        self.discrete = act.discrete
        self.in_w_z = _pair(w.in_proj.w[:vk])  # the latent's share of the input projection [V*K, D]
        if self.discrete:
            # in_proj([z, proj(onehot(a))]) = z @ W_z + table[a]: one row per action.
            self.act_table = (act.proj.w + act.proj.b) @ w.in_proj.w[vk:] + w.in_proj.b  # [n, D]
        else:
            self.act_low, self.act_high, self.act_bounded = act.low, act.high, act.bounded  # [A]
            self.act_w, self.act_b = _pair(act.proj.w), act.proj.b  # [A, E], [E]
            self.in_w_a, self.in_b = _pair(w.in_proj.w[vk:]), w.in_proj.b  # [E, D], [D]
        # RMSNorm weights as (array, tensor) pairs for `_rms`
        self.norms = [_pair(m.norm) for m in w.layers]
        self.final_norm = _pair(w.final_norm)
        self.mixers = [(_pair(m.in_proj), _pair(m.conv_weight), _pair(m.conv_bias), m.dt_bias, m.A, m.D[:, None],
                        _pair(m.gated_norm), _pair(m.out_proj)) for m in w.layers]
        self.bins = _pair(w.reward_bins)

    # ----- pieces (each mirrors the WorldModel method of the same name) --------------------------
    def _mean(self, logits: np.ndarray) -> np.ndarray:
        """The expected one-hot [B, V*K] of logits [B, V*K]: each variable's softmax with the
        uniform share mixed in (`nets.unimix_logits`, then exp), as `nets.latent_of` takes it
        without sampling."""
        b = logits.shape[0]
        if logits.size >= TORCH_FROM:
            t = torch.softmax(_tensor(logits).reshape(b, self.v, self.k), -1)
            return t.mul_(1.0 - self.unimix).add_(self.unimix / self.k).view(b, -1).numpy()
        x = logits.reshape(b, self.v, self.k)
        e = np.exp(x - x.max(-1, keepdims=True))
        e *= F32(1.0 - self.unimix) / e.sum(-1, keepdims=True)
        e += F32(self.unimix / self.k)
        return e.reshape(b, -1)

    def _rms(self, x: np.ndarray, weight: tuple) -> np.ndarray:
        """x / sqrt(mean(x^2) + eps) * w over the last dim: `mamba2.RMSNorm`, and per head the
        gated norm of `kernels.step.ref.gated_rmsnorm_ref` (x [B, H, P], w [H, P]). `weight`:
        w as an array, then as a tensor."""
        w, tw = weight
        if x.size >= TORCH_FROM:
            return F.rms_norm(_tensor(x), (x.shape[-1],), eps=self.eps).mul_(tw).numpy()
        ms = np.einsum("...i,...i->...", x, x)
        ms *= F32(1.0 / x.shape[-1])
        ms += F32(self.eps)
        np.sqrt(ms, out=ms)
        y = x / ms[..., None]
        y *= w
        return y

    def _inputs(self, z: np.ndarray, action: np.ndarray) -> np.ndarray:
        """in_proj([z, action_encoder(a)]) [B, D]."""
        u = _mm(z, self.in_w_z)
        if self.discrete:
            u += self.act_table[np.clip(action, 0, self.act_table.shape[0] - 1)]
            return u
        a = action.astype(F32, copy=False).reshape(action.shape[0], -1)
        scaled = np.clip(2 * (a - self.act_low) / (self.act_high - self.act_low) - 1, -1, 1)
        feats = np.where(self.act_bounded, scaled, _symlog(a)).astype(F32, copy=False)
        e = _mm(feats, self.act_w)
        e += self.act_b
        u += _mm(e, self.in_w_a)
        u += self.in_b
        return u

    def _layer(self, i: int, u: np.ndarray, slab: dict, slots: np.ndarray, rows: slice | None,
               reset: np.ndarray | None) -> np.ndarray:
        """One mixer step (`kernels.step.ref.mamba2_step_ref` between the projections)."""
        in_w, conv_wt, conv_b, dt_bias, a, d, norm_w, out_w = self.mixers[i]
        h, p, n = self.h, self.p, self.n
        hp, b = h * p, u.shape[0]
        conv_slab, ssm_slab = slab[f"{i}.conv"], slab[f"{i}.ssm"]
        zx = _mm(u, in_w)  # [B, 2*H*P + 2N + H]: z, x, B, C, dt
        xbc = _conv(conv_slab, zx[:, hp:2 * hp + 2 * n], slots, rows, reset, conv_wt, conv_b)
        x = xbc[:, :hp].reshape(b, h, p)
        bm, cm = xbc[:, hp:hp + n], xbc[:, hp + n:]
        dt = zx[:, 2 * hp + 2 * n:] + dt_bias
        # softplus with torch's threshold: log1p(exp(x)), and x itself above 20 (where
        # log1p(exp(20)) < x; the minimum keeps exp finite)
        dt = np.maximum(np.log1p(np.exp(np.minimum(dt, F32(20.0)))), dt)  # [B, H]
        decay = np.exp(dt * a)  # [B, H]
        state = ssm_slab[slots if rows is None else rows]  # [B, H, P, N]: a copy, or a view of the slab
        if reset is not None:
            state[reset] = 0.0
        dtx = dt[:, :, None] * x  # [B, H, P]
        if state.size >= TORCH_FROM:  # two passes over the state, each one fused op
            s, tt = torch.from_numpy(state), _tensor
            s.mul_(tt(decay)[:, :, None, None]).addcmul_(tt(dtx)[..., None], tt(bm)[:, None, None, :])
            y = torch.linalg.vecdot(s, tt(cm)[:, None, None, :]).numpy()  # C readout [B, H, P]
        else:
            state *= decay[:, :, None, None]
            state += dtx[..., None] * bm[:, None, None, :]
            y = (state.reshape(b, hp, n) @ cm[:, :, None]).reshape(b, h, p)  # C readout
        if rows is None:
            ssm_slab[slots] = state
        y += d * x
        y *= _silu(zx[:, :hp].reshape(b, h, p))  # the z gate
        return _mm(self._rms(y, norm_w).reshape(b, hp), out_w)

    def _backbone(self, x: np.ndarray, slab: dict, slots: np.ndarray, reset: np.ndarray | None) -> np.ndarray:
        # A run of consecutive slots (all of a dream batch, a planner's forks) is a slice: the
        # SSM rows are then updated in place, with no gather and scatter of the largest state.
        rows = _as_slice(slots)
        for i, w in enumerate(self.norms):
            x = x + self._layer(i, self._rms(x, w), slab, slots, rows, reset)
        return self._rms(x, self.final_norm)

    def _heads(self, h: np.ndarray):
        prior, logits, cont = self.heads(h)
        z = self._mean(prior)
        if logits.size >= TORCH_FROM:
            reward = _symexp((torch.softmax(_tensor(logits), -1) @ self.bins[1]).numpy())
        else:
            e = np.exp(logits - logits.max(-1, keepdims=True))
            reward = _symexp(_mm(e, self.bins) / e.sum(-1))
        return z, reward.astype(F32, copy=False), cont[:, 0].astype(F32, copy=False), h

    # ----- the model's verbs (`WorldModel.observe_slots`, `imagine_slots`, `decode`) --------------
    def observe(self, slab: dict, slots: np.ndarray, obs: np.ndarray, action: np.ndarray, reset: np.ndarray):
        """`WorldModel.observe_slots` with the expected latent: the agents in `slots` saw `obs` and
        took `action`.

        Args:
            slab: the backbone states as float32 numpy arrays, named as `Mamba2Backbone.state_spec`
                ("{i}.conv" [S, K-1, H*P + 2N], "{i}.ssm" [S, H, P, N]); rows `slots` are read
                and written in place. Other entries are ignored.
            slots: distinct rows int64 [B].
            obs: [B, *obs_shape].
            action: int64 [B] (discrete) or float32 [B, *act_shape] (Box).
            reset: bool [B]; True zeroes the row's state before the step.

        Returns:
            float32 (expected latent z_{t+1} [B, V*K], reward [B], continue logit [B], h [B, D]).
        """
        def rows(slots, obs, action, reset):
            z = self.posterior_mean(obs)
            return self._heads(self._backbone(self._inputs(z, action), slab, slots, reset if reset.any() else None))

        return _in_passes(rows, slots, obs, action, reset)

    def posterior_mean(self, obs: np.ndarray) -> np.ndarray:
        """The expected posterior latent of observations [B, *obs_shape] -> [B, V*K]
        (`WorldModel.latent(WorldModel.posterior(obs))`)."""
        self._sync()
        x = obs.astype(F32, copy=False).reshape(obs.shape[0], -1)
        return self._mean(self.encoder(_symlog((x - self.obs_loc) / self.obs_scale)))

    def imagine(self, slab: dict, slots: np.ndarray, z: np.ndarray, action: np.ndarray):
        """`WorldModel.imagine_slots`: step with latent z [B, V*K] (drawn from a prior) and
        `action`; arguments and outputs as `observe`."""
        self._sync()
        return _in_passes(lambda s, z, a: self._heads(self._backbone(self._inputs(z, a), slab, s, None)),
                          slots, z, action)

    def decode(self, z: np.ndarray, h: np.ndarray) -> np.ndarray:
        """`WorldModel.decode` for vector observations: [B, *obs_shape]."""
        self._sync()
        out = _in_passes(lambda z, h: self.decoder(np.concatenate([z, h], 1)), z, h)
        x = _symexp(out)
        x *= self.obs_scale
        x += self.obs_loc
        return x.reshape(z.shape[0], *self.obs_shape)
