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


def _symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(torch.abs(x))


class Value(nn.Module):
    """V(h): an MLP from the model's feature h [B, D] to the discounted return after the state
    (trained in symlog space, returned as is)."""

    def __init__(self, d_model: int, width: int = 256, discount: float = 0.99):
        super().__init__()
        self.d_model, self.width, self.discount = d_model, width, discount
        self.net = nn.Sequential(nn.Linear(d_model, width), nn.LayerNorm(width), nn.SiLU(),
                                 nn.Linear(width, width), nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = self.net(h).squeeze(-1)
        return torch.sign(y) * torch.expm1(torch.abs(y))

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
    tx, ty = torch.from_numpy(x), _symlog(torch.from_numpy(y))
    for _ in range(cfg.steps):
        idx = torch.from_numpy(rng.integers(0, x.shape[0], min(cfg.batch, x.shape[0])))
        loss = ((value.net(tx[idx]).squeeze(-1) - ty[idx]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    value.eval()
    stats = {"rows": int(x.shape[0]), "episodes": len(episodes), "target_mean": float(y.mean()),
             "target_max": float(y.max())}
    if val_x and sum(v.shape[0] for v in val_x):
        vx, vy = np.concatenate(val_x), np.concatenate(val_y)
        pred = value.predict(vx)
        stats.update(held_out_rows=int(vx.shape[0]), held_out_mse=float(((pred - vy) ** 2).mean()),
                     held_out_mse_of_mean=float(((y.mean() - vy) ** 2).mean()))
    return value, stats


def save_value(run_dir, value: Value, cfg: ValueConfig, stats: dict) -> None:
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
