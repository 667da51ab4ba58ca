"""Planners that act by imagining futures with the world model: MPPI for Box actions, categorical
CEM for Discrete actions.

For a batch of agents at o_t: every agent's state is copied into S x P candidate slots that stand
where observing o_t would start (`Engine.fork_observed`); S candidate action sequences of H steps
are drawn from the agent's current plan distribution (P particles each, which differ only where
the engine samples latents); all agents x candidates are imagined together, one batched engine
call per imagined step; each candidate is scored by its predicted rewards discounted by gamma and
by the predicted probability that the episode is still going (a predicted end at step 1 zeroes
every reward after it); the best E (elites) refit the distribution (MPPI: a softmax of their
standardised returns weighs mean and spread; CEM: their first-to-last action frequencies), for I
iterations. The agent takes the plan's first action; the plan shifts by one step to warm-start
the next decision, and starts afresh at an episode's first step. Candidate slots are given back
after every iteration: the slab never grows across decisions.

A planner owns its agents' slots in the engine it is given: `act` observes (o_t, a_t) into them
after deciding, so the next decision starts from the state that includes this step.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from worldssm.agents.base import AgentInfo, TickStream
from worldssm.errors import WorldssmError, WorldssmWarning


class PlannerError(WorldssmError):
    """A planner cannot plan as configured (no room in the slab, an unbounded action space)."""


@dataclass(frozen=True)
class PlannerConfig:
    """How a planner searches in imagination."""

    samples: int = 256  # candidate action sequences per agent and iteration (S)
    horizon: int = 12  # imagined steps per candidate (H)
    iterations: int = 4  # refits of the plan distribution per decision (I)
    elites: int = 32  # best candidates that refit the distribution (E)
    temperature: float = 0.5  # MPPI: softmax temperature over elite returns in units of their spread
    smoothing: float = 0.1  # weight of the previous distribution in a refit (0: the elites only)
    particles: int = 1  # imagined rollouts per candidate, averaged (more than 1 needs a sampling engine)
    discount: float = 0.99  # gamma of the imagined returns
    init_std: float = 1.0  # MPPI: initial spread, in half action ranges
    min_std: float = 0.05  # MPPI: the spread never falls below this (half action ranges)
    min_prob: float = 0.02  # CEM: every action keeps at least this probability at every step
    # Imagined steps after the horizon under random actions (one draw per agent and decision,
    # shared by all its candidates), their predicted rewards added to each candidate's return: a
    # Monte-Carlo value of the state a candidate ends in, under a random policy, so of two plans
    # equal over the horizon the one ending calm (a centred, slow cart) wins over the one ending
    # on the brink of what lies beyond it.
    tail: int = 0  # random-action steps imagined after the horizon, valuing where a plan ends (0: none)

    def __post_init__(self):
        for name in ("samples", "horizon", "iterations", "elites", "particles"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"PlannerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.tail >= 0:
            raise ValueError(f"PlannerConfig.tail must be >= 0, got {self.tail}")
        if self.elites > self.samples:
            raise ValueError(f"PlannerConfig.elites ({self.elites}) must be <= samples ({self.samples})")
        if not self.temperature > 0:
            raise ValueError(f"PlannerConfig.temperature must be > 0, got {self.temperature}")
        for name in ("smoothing", "discount", "min_prob"):
            if not 0.0 <= getattr(self, name) < 1.0 + (name == "discount"):
                raise ValueError(f"PlannerConfig.{name} is out of range, got {getattr(self, name)}")
        if not 0 < self.min_std <= self.init_std:
            raise ValueError(f"PlannerConfig needs 0 < min_std <= init_std, got {self.min_std}, {self.init_std}")

    @property
    def imagined_steps(self) -> int:
        """Imagined agent-steps per agent and decision."""
        return self.samples * self.particles * (self.horizon + self.tail) * self.iterations


PLANNER_PRESETS = {
    # TD-MPC2's samples and elites (512, 64) without its value function, so a horizon of 24
    # (a pendulum's swing-up; see "fast") and 4 refits: about 49k imagined steps per decision.
    "default": PlannerConfig(samples=512, horizon=24, iterations=4, elites=64),
    # For the 2-core CPU and interactive use: about 4.6k imagined steps per decision. The horizon
    # is long enough to swing a pendulum up (with Pendulum-v1's true dynamics this budget scores
    # -135 over 10 seeds; a horizon of 12 scores -336 and misses a swing-up).
    "fast": PlannerConfig(samples=64, horizon=24, iterations=3, elites=8),
    # PlaNet's budget (1000 candidates, 100 elites, 10 iterations, horizon 12): 120k per decision.
    "thorough": PlannerConfig(samples=1000, horizon=12, iterations=10, elites=100),
}


class _Planner:
    """What MPPI and CEM share: agents' slots, the candidate loop, scoring, stats."""

    def __init__(self, engine, cfg: PlannerConfig = PLANNER_PRESETS["fast"], seed: int = 0, value=None):
        if cfg.particles > 1 and not engine.sample:
            raise PlannerError("particles > 1 need an engine that samples latents (Engine(sample=True)); "
                               "with the expected latent every particle is the same rollout")
        self.engine, self.cfg, self.stream = engine, cfg, TickStream(seed)
        self.value = value  # agents.value.Value or None: what follows the imagined steps
        self.space = engine.action_space
        self._slot: dict[int, int] = {}  # agent id -> its slot in the engine
        self._plan: dict[int, np.ndarray] = {}  # agent id -> plan distribution (see subclasses)
        self.stats = {"decisions": 0, "imagined_steps": 0, "seconds": 0.0, "last_ms": 0.0}

    # ----- the protocol -------------------------------------------------------------------------
    def act(self, obs: np.ndarray, info: AgentInfo) -> np.ndarray:
        """The `Agent` protocol for agents whose states the planner keeps itself: each agent id
        gets a slot in the engine on its first call (ids that are not in `info` any more give
        theirs back); after deciding, (o_t, a_t) is observed into it."""
        ids = np.asarray(info.ids, np.int64)
        first = np.asarray(info.first, bool)
        self._forget([g for g in self._slot if g not in set(ids.tolist())])  # agents that left
        new = [g for g in ids.tolist() if g not in self._slot]
        need = ids.size * self.cfg.samples * self.cfg.particles + len(new)
        if need > self.engine.slab.num_free:
            raise PlannerError(f"planning for {ids.size} agents needs {need} free slots ({self.cfg.samples} samples "
                               f"x {self.cfg.particles} particles each, plus new agents); the engine has "
                               f"{self.engine.slab.num_free} free of {self.engine.capacity}: give it a larger capacity")
        if new:
            for g, s in zip(new, self.engine.join(len(new)).tolist()):
                self._slot[g] = s
        slots = np.array([self._slot[g] for g in ids.tolist()], np.int64)
        action = self.plan(slots, obs, first, ids, info.tick)
        self.engine.observe(slots, obs, action, first)
        return action

    def plan(self, slots, obs, first, keys, tick: int, standing=None) -> np.ndarray:
        """Decide a_t for agents whose states live in `slots` of the engine (owned by the caller,
        left unchanged): the search of the module docstring.

        Args:
            slots: int64 [A] the agents' slots.
            obs: [A, *obs_shape] o_t.
            first: bool [A], o_t starts an episode (the state is not read; the plan starts afresh).
            keys: int64 [A] ids the warm-started plans are kept under (agent ids, or slots).
            tick: the tick (seeds this decision's draws with `TickStream`).
            standing: bool [A] or None: True where the state already stands at o_t (a dream
                agent whose o_t was imagined): the candidates are plain copies; elsewhere they
                observe o_t first (`Engine.fork_observed`).

        Returns:
            actions [A] (Discrete) or [A, *shape] (Box).

        Raises:
            PlannerError: fewer free slots than A x samples x particles (nothing changed).
        """
        t0 = time.perf_counter()
        keys = np.asarray(keys, np.int64).tolist()
        n = len(keys)
        first = np.asarray(first, bool)
        need = n * self.cfg.samples * self.cfg.particles
        if need > self.engine.slab.num_free:
            raise PlannerError(f"planning for {n} agents needs {need} free slots ({self.cfg.samples} samples x "
                               f"{self.cfg.particles} particles each); the engine has {self.engine.slab.num_free} "
                               f"free of {self.engine.capacity}: give it a larger capacity")
        plan = np.stack([self._initial() if (first[i] or k not in self._plan) else self._plan[k]
                         for i, k in enumerate(keys)])  # [A, ...]
        rng = self.stream.at(tick)
        ids = np.asarray(keys, np.int64)
        tail = self._random(n, self.cfg.tail, rng) if self.cfg.tail else None  # [A, T, ...], for every iteration
        for _ in range(self.cfg.iterations):
            cand = self._sample(plan, rng)  # [A, S, H, ...] actions
            returns = self._returns(slots, obs, first, cand, ids, standing, tail)  # [A, S]
            plan = self._refit(plan, cand, returns)
        action = self._first_action(plan)
        for i, k in enumerate(keys):
            self._plan[k] = self._shift(plan[i])
        dt = time.perf_counter() - t0
        self.stats["decisions"] += 1
        self.stats["imagined_steps"] += n * self.cfg.imagined_steps
        self.stats["seconds"] += dt
        self.stats["last_ms"] = dt * 1e3
        return action

    def forget(self, ids) -> None:
        """Give back the slots of agents that will not act again."""
        self._forget(np.asarray(ids, np.int64).tolist())

    def _forget(self, ids) -> None:
        gone = [self._slot.pop(g) for g in ids if g in self._slot]
        for g in ids:
            self._plan.pop(g, None)
        if gone:
            self.engine.leave(np.array(gone, np.int64))

    # ----- imagination --------------------------------------------------------------------------
    def _forks(self, slots, obs, first, copies: int, standing) -> np.ndarray:
        """`copies` candidate slots per agent, agent-major [A * copies] (see `plan`)."""
        slots = np.asarray(slots, np.int64)
        if standing is None or not np.any(standing):
            return self.engine.fork_observed(slots, obs, copies, first)
        standing = np.asarray(standing, bool)
        forks = np.empty(slots.size * copies, np.int64)
        at = (np.arange(slots.size)[:, None] * copies + np.arange(copies)).reshape(slots.size, copies)
        forks[at[standing].reshape(-1)] = self.engine.fork(slots[standing], copies)
        rest = ~standing
        if rest.any():
            forks[at[rest].reshape(-1)] = self.engine.fork_observed(slots[rest], obs[rest], copies, first[rest])
        return forks

    def _returns(self, slots, obs, first, cand, ids, standing=None, tail=None) -> np.ndarray:
        """Imagine every agent x candidate x particle, then its random tail (`tail` [A, T, ...],
        the same for all of an agent's candidates); their discounted returns [A, S]."""
        cfg = self.cfg
        a, s = cand.shape[:2]
        copies = s * cfg.particles
        forks = self._forks(slots, obs, first, copies, standing)  # [A * S * P], agent-major
        # On a GPU the sums stay there and are read once, after the last step: the host then
        # never waits for a step, and queues the next while the GPU runs this one.
        # (An engine without a device, such as a stand-in with true dynamics, sums on the host.)
        on_gpu = str(getattr(self.engine, "device", "cpu")).startswith("cuda")
        zeros = (lambda: torch.zeros(a * copies, dtype=torch.float64, device=self.engine.device)) if on_gpu \
            else (lambda: np.zeros(a * copies))
        try:
            ret = zeros()
            log_alive = zeros()  # log P(still going): sums of log c_j, which keep the
            # differences between safe states that c itself rounds away (1.0 in float32)
            steps = cfg.horizon + (0 if tail is None else tail.shape[1])
            for h in range(steps):
                if h < cfg.horizon:
                    step = np.repeat(cand[:, :, h], cfg.particles, axis=1).reshape(a * copies, *cand.shape[3:])
                else:
                    step = np.repeat(tail[:, h - cfg.horizon], copies, axis=0)
                out = self.engine.imagine(forks, step)
                if on_gpu:
                    r, log_c = out.reward.double(), out.log_cont.double()
                else:
                    r, log_c = (x.astype(np.float64) for x in self.engine.to_host(out.reward, out.log_cont))
                ret = ret + cfg.discount ** h * (torch.exp if on_gpu else np.exp)(log_alive) * r
                log_alive = log_alive + log_c
            if on_gpu:
                ret, log_alive = (x.copy() for x in self.engine.to_host(ret, log_alive))
            if self.value is not None:  # the rewards after the last imagined state, if it goes on
                ret += cfg.discount ** steps * np.exp(log_alive) * self.value.predict(out.h)
        finally:
            self.engine.leave(forks)
        ret = ret.reshape(a, s, cfg.particles)
        bad = ~np.isfinite(ret).all(axis=(1, 2))
        if bad.any():
            warnings.warn(WorldssmWarning(
                f"the model predicted NaN or infinite rewards or continue flags for agents "
                f"{ids[bad][:10].tolist()}; their non-finite candidates are ranked last"), stacklevel=3)
        ret = np.where(np.isfinite(ret), ret, -np.inf).mean(axis=2)
        return ret

    def _elites(self, returns: np.ndarray) -> np.ndarray:
        """Indices of the E best candidates per agent [A, E]."""
        return np.argsort(-returns, axis=1, kind="stable")[:, :self.cfg.elites]

    def imagined_steps_per_second(self) -> float:
        return self.stats["imagined_steps"] / self.stats["seconds"] if self.stats["seconds"] else 0.0


class MPPIPlanner(_Planner):
    """MPPI over a bounded Box action space: a Gaussian per step and action dimension, refit from
    the elites weighted by a softmax of their standardised returns.

    Args:
        engine: the `Engine` holding the model (and, from now on, these agents' states).
        cfg: the search settings.
        seed: seed of the candidate draws (a function of (seed, tick), see `TickStream`).
        value: an `agents.value.Value` of this model, or None: each candidate's return then adds
            discount^steps x P(still going) x V(h) of the state it ends in.
    """

    def __init__(self, engine, cfg: PlannerConfig = PLANNER_PRESETS["fast"], seed: int = 0, value=None):
        super().__init__(engine, cfg, seed, value)
        if self.space["type"] != "box":
            raise PlannerError(f"MPPI plans over Box actions; this model's actions are {self.space['type']}")
        low = np.asarray(self.space["low"], np.float64).reshape(-1)
        high = np.asarray(self.space["high"], np.float64).reshape(-1)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise PlannerError("MPPI needs a bounded Box action space (finite low and high)")
        self.low, self.high = low, high
        self.mid, self.half = (low + high) / 2, np.maximum((high - low) / 2, 1e-12)
        self.shape = tuple(self.space["shape"])

    def _initial(self) -> np.ndarray:
        d = self.low.size
        return np.stack([np.zeros((self.cfg.horizon, d)), np.full((self.cfg.horizon, d), self.cfg.init_std)])  # [2, H, d]

    def _sample(self, plan, rng) -> np.ndarray:
        mean, std = plan[:, 0], plan[:, 1]  # [A, H, d] in half ranges around the middle
        a, s = plan.shape[0], self.cfg.samples
        noise = rng.standard_normal((a, s, *mean.shape[1:]))
        x = np.clip(mean[:, None] + std[:, None] * noise, -1.0, 1.0)
        x[:, 0] = np.clip(mean, -1.0, 1.0)  # the current mean is always a candidate
        return (self.mid + self.half * x).astype(np.float32).reshape(a, s, self.cfg.horizon, *self.shape)

    def _random(self, a: int, t: int, rng) -> np.ndarray:
        x = rng.uniform(-1.0, 1.0, (a, t, self.low.size))
        return (self.mid + self.half * x).astype(np.float32).reshape(a, t, *self.shape)

    def _refit(self, plan, cand, returns) -> np.ndarray:
        cfg = self.cfg
        a = cand.shape[0]
        x = ((cand.reshape(a, cfg.samples, cfg.horizon, -1) - self.mid) / self.half)  # [A, S, H, d]
        top = self._elites(returns)  # [A, E]
        g = np.take_along_axis(returns, top, axis=1)  # [A, E]
        spread = g.std(axis=1, keepdims=True)
        z = np.where(np.isfinite(g), (g - g.max(axis=1, keepdims=True)) / (cfg.temperature * (spread + 1e-8)), -np.inf)
        w = np.exp(z)
        w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-300)  # [A, E]
        elite = np.take_along_axis(x, top[:, :, None, None], axis=1)  # [A, E, H, d]
        mean = np.einsum("ae,aehd->ahd", w, elite)
        std = np.sqrt(np.einsum("ae,aehd->ahd", w, (elite - mean[:, None]) ** 2))
        std = np.clip(std, cfg.min_std, cfg.init_std)
        new = np.stack([mean, std], axis=1)  # [A, 2, H, d]
        return cfg.smoothing * plan + (1 - cfg.smoothing) * new

    def _first_action(self, plan) -> np.ndarray:
        x = np.clip(plan[:, 0, 0], -1.0, 1.0)  # the mean's first step [A, d]
        return (self.mid + self.half * x).astype(np.float32).reshape(plan.shape[0], *self.shape)

    def _shift(self, plan) -> np.ndarray:
        init = self._initial()
        return np.concatenate([plan[:, 1:], init[:, -1:]], axis=1)


class CEMPlanner(_Planner):
    """Categorical CEM over a Discrete action space: a categorical per step, refit to the elites'
    action frequencies.

    Args: as `MPPIPlanner`.
    """

    def __init__(self, engine, cfg: PlannerConfig = PLANNER_PRESETS["fast"], seed: int = 0, value=None):
        super().__init__(engine, cfg, seed, value)
        if self.space["type"] != "discrete":
            raise PlannerError(f"categorical CEM plans over Discrete actions; this model's are {self.space['type']}")
        self.n = int(self.space["n"])

    def _initial(self) -> np.ndarray:
        return np.full((self.cfg.horizon, self.n), 1.0 / self.n)  # [H, n]

    def _sample(self, plan, rng) -> np.ndarray:
        a, s, h = plan.shape[0], self.cfg.samples, self.cfg.horizon
        cum = np.cumsum(plan, axis=-1)  # [A, H, n]
        u = rng.random((a, s, h, 1))
        cand = (u > cum[:, None]).sum(-1).clip(0, self.n - 1).astype(np.int64)  # [A, S, H]
        cand[:, 0] = plan.argmax(-1)  # the most likely sequence is always a candidate
        return cand

    def _random(self, a: int, t: int, rng) -> np.ndarray:
        return rng.integers(0, self.n, (a, t)).astype(np.int64)

    def _refit(self, plan, cand, returns) -> np.ndarray:
        cfg = self.cfg
        top = self._elites(returns)  # [A, E]
        elite = np.take_along_axis(cand, top[:, :, None], axis=1)  # [A, E, H]
        freq = np.eye(self.n)[elite].mean(axis=1)  # [A, H, n]
        probs = cfg.smoothing * plan + (1 - cfg.smoothing) * freq
        probs = np.maximum(probs, cfg.min_prob)
        return probs / probs.sum(-1, keepdims=True)

    def _first_action(self, plan) -> np.ndarray:
        return plan[:, 0].argmax(-1).astype(np.int64)

    def _shift(self, plan) -> np.ndarray:
        return np.concatenate([plan[1:], self._initial()[-1:]], axis=0)


def preset_config(cfg: PlannerConfig | str | None) -> PlannerConfig:
    """`cfg` itself, the preset of `PLANNER_PRESETS` it names, or "fast" for None."""
    if cfg is None:
        return PLANNER_PRESETS["fast"]
    if isinstance(cfg, PlannerConfig):
        return cfg
    if cfg not in PLANNER_PRESETS:
        raise ValueError(f"unknown planner preset {cfg!r}; choose one of {sorted(PLANNER_PRESETS)}")
    return PLANNER_PRESETS[cfg]


def make_planner(engine, cfg: PlannerConfig | str = "fast", seed: int = 0, value=None):
    """MPPI for a Box action space, categorical CEM for a Discrete one; `cfg` a PlannerConfig or
    a preset name of `PLANNER_PRESETS`; `value` an `agents.value.Value` of the engine's model
    (`load_value(run)`), or None."""
    cfg = preset_config(cfg)
    cls = MPPIPlanner if engine.action_space["type"] == "box" else CEMPlanner
    return cls(engine, cfg, seed, value)
