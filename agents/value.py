"""A value of the model's state for planners: what lies beyond the imagined horizon.

A planner sums the rewards it imagines over H steps, so two plans that both survive the horizon
score alike however close to failing they end: in CartPole-v1 nothing then prefers a centred,
slow cart, and a planner lets it drift off the track. `Value` reads the model's feature h (what
the reward and continue heads read, `EngineOutput.h`) and estimates the discounted rewards that
follow the state a plan ends in. It is fitted to Monte-Carlo returns of the data's episodes, the
returns of whatever policy collected them: on random-policy data it knows little beyond the
pole, but fitted on `worldssm improve`'s rounds it learns where the planner's own episodes went
on to fail (TD-MPC learns its value from its planner's episodes too). The planner adds
discount^H x P(still going) x V(h_H) to each candidate's return (`make_planner(..., value=)`).

`fit_value_in_dreams` learns the value from the model alone instead: value iteration in its own
imagination. Many dreams start from windows of real data and step on, each step trying every
action (Discrete) or a few random ones (Box) one step ahead and taking the best by
reward + discount x P(goes on) x V (with a few random steps), and V is fitted to lambda-returns
of these dreams against a slowly following copy of itself. What it estimates is the return of
acting well in the model, not of the policy that collected the data: with CartPole-v1's true
equations in place of a model, the "fast" CEM planner goes from a mean of 199.8 over 10 episodes
to 500 in all 10 with it, where a value of random-policy returns only teaches the planner what
random play survives. It knows what the model knows: a model that never saw the cart reach the
end of its track cannot value staying away from it.

Targets follow the data's convention (reward[t] is received on arriving at obs[t]): observing
(o_t, a_t) gives h_t, which predicts r_{t+1} and whether the episode goes on; its value target
is the discounted sum of r_{t+2}, r_{t+3}, ... up to the episode's end, 0 when t + 1 ends it.
An episode cut short (a time limit, the end of a collection) says nothing of what came after:
a step of it counts only where the episode holds k rewards after it with discount^k below
`min_future`, so the rewards it cannot see weigh little.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from worldssm.errors import WorldssmError
from worldssm.model.nets import symexp, symlog

VALUE_WEIGHTS, VALUE_META = "value.safetensors", "value.json"


@dataclass(frozen=True)
class ValueConfig:
    """How a value is fitted."""

    discount: float = 0.99  # gamma of the returns it estimates (the planner's own discount)
    width: int = 256  # hidden width of its MLP (two hidden layers)
    steps: int = 3000  # Adam updates
    batch: int = 512  # rows per update
    lr: float = 1e-3  # Adam's learning rate
    min_future: float = 0.05  # a cut-short episode's step counts once discount^(rewards after it) < this
    val_fraction: float = 0.1  # episodes held out to report the fit
    seed: int = 0  # split, initialisation and batches

    def __post_init__(self):
        if not 0.0 < self.discount < 1.0:
            raise ValueError(f"ValueConfig.discount must be in (0, 1), got {self.discount}")
        if not 0.0 < self.min_future < 1.0:
            raise ValueError(f"ValueConfig.min_future must be in (0, 1), got {self.min_future}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"ValueConfig.val_fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("width", "steps", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"ValueConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"ValueConfig.lr must be > 0, got {self.lr}")


class Value(nn.Module):
    """V(h): an MLP from the model's feature h [B, D] to the discounted return after the state
    (trained in symlog space, returned as is)."""

    def __init__(self, d_model: int, width: int = 256, discount: float = 0.99):
        super().__init__()
        self.d_model, self.width, self.discount = d_model, width, discount
        self.net = nn.Sequential(nn.Linear(d_model, width), nn.LayerNorm(width), nn.SiLU(),
                                 nn.Linear(width, width), nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return symexp(self.net(h).squeeze(-1))

    def fit_step(self, opt: torch.optim.Optimizer, h: torch.Tensor, target: torch.Tensor) -> None:
        """One Adam step of the squared error in symlog space against returns `target` [B]."""
        loss = ((self.net(h).squeeze(-1) - symlog(target)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def predict(self, h) -> np.ndarray:
        """float64 values [B] of features h [B, D] (a tensor on any device, or an array)."""
        h = torch.as_tensor(h).detach().to("cpu", torch.float32)
        if h.ndim != 2 or h.shape[1] != self.d_model:
            raise WorldssmError(f"the value reads features [B, {self.d_model}], got {tuple(h.shape)}: "
                                "was it fitted for another model?")
        return self(h).double().numpy()


def value_targets(reward: np.ndarray, terminal_end: bool, discount: float, min_future: float) -> tuple[np.ndarray, np.ndarray]:
    """One episode's targets and mask for steps t = 0 .. T-1 (T + 1 = len(reward); see the module
    docstring): (targets [T], usable [T])."""
    r = np.asarray(reward, np.float64)
    n = r.size - 1
    future = np.zeros(n + 1)  # future[i]: discounted rewards after arriving at step i
    for i in range(n - 1, -1, -1):
        future[i] = r[i + 1] + discount * future[i + 1]
    targets = future[1:]  # h_t's: the rewards after step t + 1 (0 when t + 1 is the last)
    if terminal_end:
        return targets, np.ones(n, bool)
    horizon = math.ceil(math.log(min_future) / math.log(discount))  # steps that still weigh
    left = n - 1 - np.arange(n)  # rewards after step t + 1 that the episode holds
    return targets, left >= horizon


def features(model, episodes: list[dict], batch: int = 1024) -> list[np.ndarray]:
    """The feature h_t of every step t = 0 .. T-1 of each episode, observed as an engine does
    (the expected latent, from the episode's first step): a list of float32 [T, D]."""
    from worldssm.engine import Engine

    out = []
    for start in range(0, len(episodes), batch):
        eps = episodes[start:start + batch]
        lengths = np.array([len(e["reward"]) - 1 for e in eps])
        engine = Engine(model, len(eps))
        slots = engine.join(len(eps))
        feats = [np.zeros((n, model.cfg.backbone.d_model), np.float32) for n in lengths]
        for t in range(int(lengths.max(initial=0))):
            rows = np.flatnonzero(lengths > t)
            o = np.stack([eps[i]["obs"][t] for i in rows])
            a = np.stack([eps[i]["action"][t] for i in rows])
            h = engine.observe(slots[rows], o, a, np.full(rows.size, t == 0)).h.cpu().numpy()
            for k, i in enumerate(rows.tolist()):
                feats[i][t] = h[k]
        out += feats
    return out


def fit_value(model, episodes: list[dict], cfg: ValueConfig = ValueConfig()) -> tuple[Value, dict]:
    """Fit a `Value` for `model` to the Monte-Carlo returns of `episodes` (dicts with "obs",
    "action", "reward", "is_terminal", as `RolloutDataset.episodes`). Returns (value, stats):
    rows used, the held-out episodes' mean squared error against predicting the mean target.

    Raises:
        WorldssmError: no step is usable (every episode too short for its truncation).
    """
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        feats = features(model, episodes)
    held = rng.random(len(episodes)) < cfg.val_fraction if len(episodes) > 1 else np.zeros(1, bool)
    xs, ys, val_x, val_y = [], [], [], []
    for ep, f, out in zip(episodes, feats, held.tolist()):
        y, use = value_targets(ep["reward"], bool(ep["is_terminal"][-1]), cfg.discount, cfg.min_future)
        (val_x if out else xs).append(f[use])
        (val_y if out else ys).append(y[use])
    x, y = np.concatenate(xs), np.concatenate(ys).astype(np.float32)
    if x.shape[0] == 0:
        raise WorldssmError("no step of these episodes can be valued: every one ends by truncation before "
                            f"discount^k falls below {cfg.min_future}; collect longer or terminated episodes")
    value = Value(model.cfg.backbone.d_model, cfg.width, cfg.discount)
    opt = torch.optim.Adam(value.parameters(), lr=cfg.lr)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(cfg.steps):
        idx = torch.from_numpy(rng.integers(0, x.shape[0], min(cfg.batch, x.shape[0])))
        value.fit_step(opt, tx[idx], ty[idx])
    value.eval()
    stats = {"rows": int(x.shape[0]), "episodes": len(episodes), "target_mean": float(y.mean()),
             "target_max": float(y.max())}
    if val_x and sum(v.shape[0] for v in val_x):
        vx, vy = np.concatenate(val_x), np.concatenate(val_y)
        pred = value.predict(vx)
        stats.update(held_out_rows=int(vx.shape[0]), held_out_mse=float(((pred - vy) ** 2).mean()),
                     held_out_mse_of_mean=float(((y.mean() - vy) ** 2).mean()))
    return value, stats


def save_value(run_dir, value: Value, cfg: ValueConfig | DreamValueConfig, stats: dict) -> None:
    """Write `value` beside a run's checkpoints (weights as safetensors, settings and fit as JSON),
    each file through a temporary file and a rename."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{VALUE_WEIGHTS}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in value.state_dict().items()}, tmp)
        os.replace(tmp, run_dir / VALUE_WEIGHTS)
    finally:
        Path(tmp).unlink(missing_ok=True)
    from worldssm.atomic import atomic_write_text

    meta = {"d_model": value.d_model, "width": value.width, "config": asdict(cfg), "fit": stats}
    atomic_write_text(run_dir / VALUE_META, json.dumps(meta, indent=1))


def load_value(run_dir) -> Value:
    """The value saved in a run directory (no code is executed: safetensors and JSON), with how
    it was fitted as `.fit`.

    Raises:
        WorldssmError: the run has no value, or its files do not match each other.
    """
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    meta_path, weights = run_dir / VALUE_META, run_dir / VALUE_WEIGHTS
    if not (meta_path.is_file() and weights.is_file()):
        raise WorldssmError(f"{run_dir} holds no value ({VALUE_META} and {VALUE_WEIGHTS}): fit one with "
                            "`worldssm improve --value` or `worldssm.agents.value.fit_value`")
    try:
        meta = json.loads(meta_path.read_text())
        value = Value(int(meta["d_model"]), int(meta["width"]), float(meta["config"]["discount"]))
        value.load_state_dict(load_file(weights))
        value.fit = meta.get("fit", {})  # how it was fitted (`fit_value`'s stats)
    except (KeyError, TypeError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
        raise WorldssmError(f"the value in {run_dir} cannot be read: {exc}") from None
    return value.eval()


@dataclass(frozen=True)
class DreamValueConfig:
    """How `fit_value_in_dreams` fits a value (value iteration in the model's imagination)."""

    discount: float = 0.99  # gamma of the returns it estimates (the planner's own discount)
    width: int = 256  # hidden width of its MLP (two hidden layers)
    dreams: int = 256  # dreams stepped side by side
    iterations: int = 15000  # imagined steps of every dream (each with a one-step lookahead)
    candidates: int = 8  # Box actions: random actions tried at each step (Discrete: every action)
    context: int = 8  # real steps a dream starts from (windows of the data's episodes)
    max_steps: int = 500  # a dream starts afresh after this many steps
    epsilon: float = 0.1  # share of steps that take a random candidate instead of the best
    lam: float = 0.95  # lambda of the lambda-return targets
    segment: int = 16  # steps of dream between target computations
    tau: float = 0.02  # step of the target copy toward the value after every imagined step
    lr: float = 3e-4  # Adam's learning rate
    batch: int = 512  # rows per update
    updates: int = 4  # Adam updates per imagined step (once the buffer holds 4 batches)
    buffer: int = 200_000  # targets kept for the updates (the newest)
    # Vector observations: the model is not trusted where the data never went. A lookahead step
    # whose decoded observation leaves the data's range (per dimension, widened by this fraction
    # of it on each side) is not taken while another is in range, and a dream that takes one
    # anyway stops there without a target (as at max_steps). None: no bound.
    support: float | None = 0.1
    seed: int = 0  # starts, exploration, initialisation and batches

    def __post_init__(self):
        if not 0.0 < self.discount < 1.0:
            raise ValueError(f"DreamValueConfig.discount must be in (0, 1), got {self.discount}")
        for name in ("lam", "tau"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"DreamValueConfig.{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"DreamValueConfig.epsilon must be in [0, 1], got {self.epsilon}")
        for name in ("width", "dreams", "iterations", "candidates", "context", "max_steps", "segment", "batch",
                     "updates", "buffer"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"DreamValueConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"DreamValueConfig.lr must be finite and > 0, got {self.lr}")
        if self.support is not None and not (self.support >= 0 and math.isfinite(self.support)):
            raise ValueError(f"DreamValueConfig.support must be finite and >= 0 or None, got {self.support}")
        if not self.buffer >= 4 * self.batch:
            raise ValueError(f"DreamValueConfig.buffer must hold 4 batches (updates start then), got {self.buffer} "
                             f"< 4 x {self.batch}")


MAX_DISCRETE_LOOKAHEAD = 16  # Discrete spaces up to this many actions try each one


def lambda_returns(y, r, c, end, v, lam: float, discount: float) -> np.ndarray:
    """The targets of the features h_0 .. h_{L-1} of L + 1 dream steps (arrays [L + 1, n]):
    at step i a dream took the feature h_i (reward r_i and continue c_i predicted from it; `v`
    is the target copy's value of h_i; `end`: the dream stopped after it), and y_i is the best
    lookahead value of the state it stood in, the one-step target of h_{i-1}. Then
    G_{L-1} = y_L and G_i = (1 - lam) y_{i+1} + lam (r_{i+1} + discount c_{i+1} G_{i+1}); where a
    dream stopped after h_i, nothing follows it, and G_i = v_i stands in below it (no target
    of its own: `end`). Returns G [L, n]."""
    y, r, c, end, v = (np.asarray(x, np.float64) for x in (y, r, c, end, v))
    steps = y.shape[0] - 1
    g = np.empty((steps, y.shape[1]))
    g[steps - 1] = np.where(end[steps - 1], v[steps - 1], y[steps])
    for i in range(steps - 2, -1, -1):
        g[i] = np.where(end[i], v[i], (1 - lam) * y[i + 1] + lam * (r[i + 1] + discount * c[i + 1] * g[i + 1]))
    return g


def _lookahead_actions(space: dict, cfg: DreamValueConfig, n: int, rng) -> np.ndarray:
    """The actions every dream tries at a step, dream-major: [n * K] or [n * K, *shape]."""
    if space["type"] == "discrete":
        return np.tile(np.arange(int(space["n"]), dtype=np.int64), n)
    low = np.asarray(space["low"], np.float64)
    high = np.asarray(space["high"], np.float64)
    return rng.uniform(low, high, (n * cfg.candidates, *low.shape)).astype(np.float32)


def fit_value_in_dreams(model, episodes: list[dict], cfg: DreamValueConfig = DreamValueConfig(),
                        progress: bool = False) -> tuple[Value, dict]:
    """Fit a `Value` for `model` by value iteration in its own dreams (module docstring); the
    episodes (dicts with "obs" and "action", as `RolloutDataset.episodes`) only give the windows
    dreams start from. Returns (value, stats): iterations, seconds, the dreams' last values, how
    many dreams ended and their mean length.

    Raises:
        WorldssmError: an action space it cannot try actions in (a Discrete space of more than
            16 actions, an unbounded Box), or no episode as long as the context.
    """
    from worldssm.engine import Engine

    k = _lookahead_width(model.action_space, cfg)
    engine = Engine(model, cfg.dreams * (k + 1), seed=cfg.seed)
    return value_iteration(engine, model.cfg.backbone.d_model, episodes, cfg, progress)


def _lookahead_width(space: dict, cfg: DreamValueConfig) -> int:
    if space["type"] == "discrete" and int(space["n"]) > MAX_DISCRETE_LOOKAHEAD:
        raise WorldssmError(f"fit_value_in_dreams tries every Discrete action at each step; {space['n']} actions "
                            f"is more than {MAX_DISCRETE_LOOKAHEAD}")
    if space["type"] == "box" and not (np.isfinite(np.asarray(space["low"], np.float64)).all()
                                       and np.isfinite(np.asarray(space["high"], np.float64)).all()):
        raise WorldssmError("fit_value_in_dreams draws Box actions between the space's bounds; this space is unbounded")
    return int(space["n"]) if space["type"] == "discrete" else cfg.candidates


def value_iteration(engine, d_model: int, episodes: list[dict], cfg: DreamValueConfig,
                    progress: bool = False) -> tuple[Value, dict]:
    """`fit_value_in_dreams` over any engine (an `Engine`, or a look-alike with join, reset,
    observe, fork, fork_observed, imagine -> reward, log_cont, h, leave, and action_space) with
    room for cfg.dreams x (lookahead + 1) slots; `d_model` is the width of its features h."""
    import copy
    import time

    space = engine.action_space
    k = _lookahead_width(space, cfg)
    starts = [e for e in episodes if len(e["obs"]) >= cfg.context]
    if not starts:
        longest = max((len(e["obs"]) for e in episodes), default=0)
        raise WorldssmError(f"no episode has the {cfg.context} steps a dream starts from (the longest has {longest}); "
                            "lower DreamValueConfig.context")
    n, d = cfg.dreams, d_model
    bounded = cfg.support is not None and np.ndim(starts[0]["obs"][0]) == 1
    if bounded:
        low = np.min([e["obs"].min(0) for e in episodes if len(e["obs"])], axis=0).astype(np.float64)
        high = np.max([e["obs"].max(0) for e in episodes if len(e["obs"])], axis=0).astype(np.float64)
        span = high - low
        flat = span <= 1e-6 * (1.0 + np.abs(high))  # a dimension the data never varied bounds nothing
        low = np.where(flat, -np.inf, low - cfg.support * span)
        high = np.where(flat, np.inf, high + cfg.support * span)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    value = Value(d, cfg.width, cfg.discount)
    target = copy.deepcopy(value).eval()
    opt = torch.optim.Adam(value.parameters(), lr=cfg.lr)
    slots = engine.join(n)
    pending = np.zeros((n, *np.shape(starts[0]["obs"][0])), np.float32)  # a fresh dream's last real observation
    real = np.zeros(n, bool)  # True: the next step observes `pending` first
    steps = np.zeros(n, np.int64)
    buf_h, buf_y = np.zeros((cfg.buffer, d), np.float32), np.zeros(cfg.buffer, np.float32)
    size = at = 0
    seg: list[dict] = []
    lengths: list[int] = []

    def start(rows: np.ndarray) -> None:
        obs, act = [], []
        for _ in rows:
            ep = starts[int(rng.integers(len(starts)))]
            s = int(rng.integers(len(ep["obs"]) - cfg.context + 1))
            obs.append(ep["obs"][s:s + cfg.context])
            act.append(ep["action"][s:s + cfg.context - 1])
        obs, act = np.stack(obs), np.stack(act)
        engine.reset(slots[rows])
        for t in range(cfg.context - 1):
            engine.observe(slots[rows], obs[:, t], act[:, t], np.full(rows.size, t == 0))
        pending[rows], real[rows], steps[rows] = obs[:, -1], True, 0

    def store(h: np.ndarray, y: np.ndarray) -> None:
        nonlocal size, at
        pos = (at + np.arange(h.shape[0])) % cfg.buffer
        buf_h[pos], buf_y[pos] = h, y
        at, size = (at + h.shape[0]) % cfg.buffer, min(size + h.shape[0], cfg.buffer)

    def targets() -> None:
        """Store the lambda-returns of the features of seg[0 .. L-1] (`lambda_returns`)."""
        g = lambda_returns(*(np.stack([x[key] for x in seg]) for key in ("y", "r", "c", "end", "v")),
                           cfg.lam, cfg.discount)
        for i in range(len(seg) - 1):
            keep = ~seg[i]["end"]
            store(seg[i]["h"][keep], g[i][keep].astype(np.float32))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.iterations, desc="value in dreams", unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    start(np.arange(n))
    at_dream = (np.arange(n)[:, None] * k + np.arange(k)).reshape(n, k)
    y = np.zeros(n)
    outside = 0  # lookahead steps that left the data's range
    updates = 0
    forks = np.zeros(0, np.int64)  # live lookahead slots (given back on an error)
    try:
        for _ in range(cfg.iterations):
            new = np.empty(n * k, np.int64)
            if real.any():
                new[at_dream[real].reshape(-1)] = engine.fork_observed(slots[real], pending[real], k,
                                                                       np.zeros(int(real.sum()), bool))
            if (~real).any():
                new[at_dream[~real].reshape(-1)] = engine.fork(slots[~real], k)
            forks = new
            out = engine.imagine(forks, _lookahead_actions(space, cfg, n, rng), decode=bounded)
            r = out.reward.cpu().numpy().astype(np.float64)
            log_c = out.log_cont.cpu().numpy().astype(np.float64)
            left = np.zeros(n * k, bool)
            if bounded:  # out of the data's range
                o = out.obs.cpu().numpy().astype(np.float64)
                left = ((o < low) | (o > high)).any(axis=1)
                outside += int(left.sum())
            h = out.h.float().cpu().numpy()
            v_all = target.predict(h)
            q = (r + cfg.discount * np.exp(log_c) * v_all).reshape(n, k)
            out_of_range = left.reshape(n, k)
            q = np.where(out_of_range & ~out_of_range.all(axis=1, keepdims=True), -np.inf, q)
            y = q.max(axis=1)  # the value of each dream's state: the target of the feature that led there
            pick = q.argmax(axis=1)
            explore = rng.random(n) < cfg.epsilon
            pick[explore] = rng.integers(0, k, int(explore.sum()))
            chosen = at_dream[np.arange(n), pick]
            keep = forks[chosen]
            engine.leave(np.concatenate([slots, np.delete(forks, chosen)]))
            slots, forks = keep, np.zeros(0, np.int64)
            real[:] = False
            steps += 1
            cont = np.exp(log_c[chosen])
            end = (cont < 0.5) | (steps >= cfg.max_steps) | left[chosen]
            seg.append({"y": y, "h": h[chosen], "r": r[chosen], "c": cont, "end": end, "v": v_all[chosen]})
            if end.any():
                lengths.extend(steps[end].tolist())
                start(np.flatnonzero(end))
            if len(seg) == cfg.segment + 1:
                targets()
                seg = seg[cfg.segment:]
            if size >= 4 * cfg.batch:
                for _ in range(cfg.updates):
                    b = rng.integers(0, size, cfg.batch)
                    value.fit_step(opt, torch.from_numpy(buf_h[b]), torch.from_numpy(buf_y[b]))
                updates += cfg.updates
                with torch.no_grad():
                    for p, tp in zip(value.parameters(), target.parameters()):
                        tp.lerp_(p, cfg.tau)
            if bar is not None:
                bar.update(1)
    except BaseException:
        engine.leave(np.concatenate([slots, forks]))
        raise
    finally:
        if bar is not None:
            bar.close()
    engine.leave(slots)
    if updates == 0:
        raise WorldssmError(f"{cfg.iterations} iterations of {cfg.dreams} dreams gave too few targets for one update "
                            f"(updates start at {4 * cfg.batch} targets); raise DreamValueConfig.iterations")
    value.eval()
    stats = {"method": "dreams", "iterations": cfg.iterations, "imagined_steps": cfg.iterations * n * k,
             "seconds": time.perf_counter() - t0, "episodes": len(starts),
             "last_values_mean": float(y.mean()), "last_values_max": float(y.max()),
             "dream_ends": len(lengths), "mean_dream_length": float(np.mean(lengths)) if lengths else None,
             "support_bound": bounded, "lookahead_steps_outside": outside, "updates": updates}
    return value, stats
