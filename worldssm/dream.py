"""The world model as an environment: `DreamEnv` (Gymnasium), `DreamVectorEnv` (Gymnasium vector),
`DreamParallelEnv` (PettingZoo Parallel).

A dream starts from real context: `reset` burns the model in on a window of a recorded episode
(from the run's rollouts, or given as `options={"context": (obs [C, ...], actions [C - 1, ...])}`),
and the first observation is the window's last real observation. Each `step(action)` then advances
the model: the first step observes that real observation with the action, later steps imagine with
the model's own latent. The observation returned is the decoded prediction, clipped into a bounded
observation space; the reward comes from the reward head; `terminated` is the continue head's
verdict (probability below 0.5, or a Bernoulli draw with `sample=True`); `truncated` comes after
`max_steps`. All randomness (context windows, latent draws with `sample=True`, termination draws)
comes from `reset(seed)`.

Every env here runs its dreams in one `Engine` (one batched model call per step for all of them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worldssm.errors import WorldssmError, require

gym = require("gymnasium", "gymnasium>=1.0")

DEFAULT_CONTEXT = 16
DEFAULT_MAX_STEPS = 500


class Contexts:
    """Windows of real episodes to start dreams from.

    Args:
        episodes: episode dicts with "obs" [T, ...] and "action" [T, ...] (a RolloutDataset's).
        length: steps per window C (the last one is the dream's first observation).
    """

    def __init__(self, episodes: list[dict], length: int = DEFAULT_CONTEXT):
        if length < 1:
            raise ValueError(f"context length must be >= 1, got {length}")
        usable = [e for e in episodes if len(e["obs"]) >= length]
        if not usable:
            raise WorldssmError(f"no episode has {length} steps to start a dream from; use a shorter context")
        self.episodes, self.length = usable, length
        self.obs_min = np.min([e["obs"].min(0) for e in usable], axis=0).astype(np.float64)
        self.obs_max = np.max([e["obs"].max(0) for e in usable], axis=0).astype(np.float64)

    @classmethod
    def from_data(cls, path, length: int = DEFAULT_CONTEXT) -> Contexts:
        from worldssm.data import RolloutDataset

        return cls(RolloutDataset.load(path).episodes, length)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n windows: (obs [n, C, ...], actions [n, C - 1, ...])."""
        obs, act = [], []
        for _ in range(n):
            ep = self.episodes[int(rng.integers(len(self.episodes)))]
            s = int(rng.integers(len(ep["obs"]) - self.length + 1))
            obs.append(ep["obs"][s:s + self.length])
            act.append(ep["action"][s:s + self.length - 1])
        return np.stack(obs), np.stack(act)


def _source(checkpoint, data, context: int, device: str, env: str | None = None):
    """(model, Contexts): the model of a run or checkpoint directory (or a WorldModel given as
    `checkpoint`), and the windows dreams start from (`data`, else the run's recorded data).
    With `env`, a Gymnasium id or worldssm env name, its spaces must be the model's."""
    from worldssm.model import WorldModel, load_model

    if isinstance(checkpoint, WorldModel):
        model, recorded = checkpoint.to(device).eval(), None
    else:
        model, sidecar = load_model(checkpoint, device=device)
        path = sidecar.get("data", {}).get("path")
        recorded = Path(path) if path else None
    if env is not None:
        from worldssm.agents.rollout import check_env_spaces

        check_env_spaces(env, model, "a WorldModel" if isinstance(checkpoint, WorldModel) else str(checkpoint))
    source = data if data is not None else recorded
    if source is None:
        raise WorldssmError(f"{checkpoint}: the run records no data to start dreams from; pass data=PATH")
    contexts = source if isinstance(source, Contexts) else Contexts.from_data(source, context)
    return model, contexts


def _obs_space(model, contexts: Contexts):
    """A bounded observation space: the model's bounds where finite, else the real data's range
    widened by a tenth on each side (a dream's decoded observations are clipped into it)."""
    space = model.obs_space
    if model.obs_kind == "image":
        return gym.spaces.Box(0, 255, tuple(model.obs_shape), np.uint8)
    low = np.asarray(space["low"], np.float64)
    high = np.asarray(space["high"], np.float64)
    span = np.maximum(contexts.obs_max - contexts.obs_min, 1e-3)
    low = np.where(np.isfinite(low), low, contexts.obs_min - 0.1 * span)
    high = np.where(np.isfinite(high), high, contexts.obs_max + 0.1 * span)
    return gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), tuple(model.obs_shape), np.float32)


class Dreams:
    """N dreams in one engine: start rows from real context, step all rows at once.

    Args:
        model: a trained WorldModel.
        n: dreams.
        contexts: where dreams start.
        max_steps: steps before a dream is truncated.
        sample: draw latents and terminations instead of taking the expected latent and the 0.5 threshold.
        device: the engine's device.
        state_dtype: the engine's storage of SSM states (`Engine`'s argument; None: the model's).
    """

    def __init__(self, model, n: int, contexts: Contexts, max_steps: int = DEFAULT_MAX_STEPS,
                 sample: bool = False, device: str = "cpu", state_dtype: str | None = None):
        from worldssm.engine import Engine

        if n < 1 or max_steps < 1:
            raise ValueError(f"need n >= 1 and max_steps >= 1, got {n}, {max_steps}")
        self.engine = Engine(model, n, device=device, sample=sample, state_dtype=state_dtype)
        self.model, self.n, self.contexts, self.max_steps, self.sample = model, n, contexts, max_steps, sample
        self.observation_space = _obs_space(model, contexts)
        # the space's bounds on the engine's device, where decoded observations are clipped (`_bounded`)
        box = self.observation_space
        self._bounds = tuple(torch.as_tensor(b, device=self.engine.device) for b in (box.low, box.high))
        from worldssm.spaces import space_from_dict

        space = space_from_dict(model.action_space)
        self._scale = None
        if isinstance(space, gym.spaces.Box) and np.isfinite(space.low).all() and np.isfinite(space.high).all():
            # A bounded Box is offered as [-1, 1] per dimension (what RL libraries expect) and
            # mapped onto the model's own bounds.
            self._scale = (space.low.astype(np.float64), space.high.astype(np.float64))
            space = gym.spaces.Box(-1.0, 1.0, space.shape, np.float32)
        self.action_space = space
        self.slots = self.engine.join(n)
        self.obs = np.zeros((n, *model.obs_shape), self.observation_space.dtype)
        self.real = np.ones(n, bool)  # the next step observes obs[row] (a real start observation)
        self.first = np.zeros(n, bool)  # ... as an episode's first step (a one-step context)
        self.steps = np.zeros(n, np.int64)

    def start(self, rows: np.ndarray, rng: np.random.Generator, context=None) -> None:
        """Burn rows in on real context (drawn with `rng`, or `context` = (obs [C, ...] or
        [len(rows), C, ...], actions [C - 1, ...] likewise))."""
        rows = np.asarray(rows, np.int64)
        if context is None:
            obs, act = self.contexts.draw(rng, rows.size)
        else:
            obs, act = (np.asarray(x) for x in context)
            if obs.ndim == len(self.model.obs_shape) + 1:  # one window for every row
                obs, act = np.repeat(obs[None], rows.size, 0), np.repeat(act[None], rows.size, 0)
            if obs.shape[:1] != (rows.size,) or obs.shape[2:] != tuple(self.model.obs_shape) \
                    or act.shape[:2] != (rows.size, obs.shape[1] - 1):
                raise WorldssmError(f"context must be obs [C, {tuple(self.model.obs_shape)}] and actions [C - 1, ...]; "
                                    f"got {obs.shape} and {act.shape}")
        if self.sample:
            self.engine.generator.manual_seed(int(rng.integers(2**62)))
        slots = self.slots[rows]
        self.engine.reset(slots)
        for t in range(obs.shape[1] - 1):
            self.engine.observe(slots, obs[:, t], act[:, t], np.full(rows.size, t == 0))
        self.obs[rows] = self._clip(obs[:, -1])
        self.real[rows] = True
        self.first[rows] = obs.shape[1] == 1  # no step was observed yet: the first one starts the episode
        self.steps[rows] = 0

    def to_model(self, actions) -> np.ndarray:
        """Actions in `action_space` -> the model's own action space."""
        actions = np.asarray(actions)
        if self._scale is None:
            return actions
        low, high = self._scale
        return (low + (np.clip(actions, -1, 1) + 1) / 2 * (high - low)).astype(np.float32)

    def step(self, actions: np.ndarray, rng: np.random.Generator, rows=None, model_space: bool = False):
        """Advance the dreams in `rows` (default: all, in order): (obs, reward, terminated,
        truncated), one row per dream stepped; actions in `action_space`, one per row (or, with
        `model_space`, already in the model's own action space)."""
        # All rows (a vector env's step) index with a slice: no gathers or scatters of the rows.
        rows = slice(None) if rows is None else np.asarray(rows, np.int64)
        actions = np.asarray(actions) if model_space else self.to_model(actions)
        real = self.real[rows]
        k = real.size
        if not real.any():  # every row dreams on: one imagine, its outputs as they come
            out = self.engine.imagine(self.slots[rows], actions, decode=True, latents=False)
            # one copy out for the three (views of the engine's buffer until its next copy)
            out_rew, out_cont, obs = (a.copy() for a in self.engine.to_host(out.reward, out.cont, self._bounded(out.obs)))
        else:
            idx = np.arange(self.n)[rows]
            out_rew, out_cont = np.zeros(k, np.float32), np.zeros(k, np.float32)
            obs = np.zeros((k, *self.model.obs_shape), self.observation_space.dtype)
            for pick, observe in ((np.flatnonzero(real), True), (np.flatnonzero(~real), False)):
                if pick.size == 0:
                    continue
                r = idx[pick]
                if observe:
                    out = self.engine.observe(self.slots[r], self.obs[r], actions[pick], self.first[r], decode=True,
                                              latents=False)
                else:
                    out = self.engine.imagine(self.slots[r], actions[pick], decode=True, latents=False)
                out_rew[pick], out_cont[pick], obs[pick] = self.engine.to_host(out.reward, out.cont,
                                                                                self._bounded(out.obs))
        self.real[rows] = False
        self.steps[rows] += 1
        self.obs[rows] = obs
        if self.sample:
            terminated = rng.random(k) >= out_cont
        else:
            terminated = out_cont < 0.5
        truncated = (self.steps[rows] >= self.max_steps) & ~terminated
        return obs, out_rew, terminated, truncated

    def _clip(self, obs: np.ndarray) -> np.ndarray:
        """Real observations [B, *obs_shape] (a start's context) in the observation space."""
        space = self.observation_space
        if space.dtype == np.uint8:
            return np.clip(np.rint(obs), 0, 255).astype(np.uint8)
        return np.clip(obs, space.low, space.high).astype(np.float32)

    def _bounded(self, obs: torch.Tensor) -> torch.Tensor:
        """Decoded observations [B, *obs_shape] in the observation space, on the engine's device
        (numpy's clip with per-dimension bounds loops over the rows: 0.3 ms of host time for
        16,384 three-dimensional rows on the 2-core machine, with the GPU idle); images rounded to
        uint8, a quarter of the bytes to copy out."""
        if self.observation_space.dtype == np.uint8:
            return torch.round(obs).clamp_(0, 255).to(torch.uint8)
        return torch.clamp(obs.float(), *self._bounds)


class DreamEnv(gym.Env):
    """One dream as a `gymnasium.Env` (registered as `worldssm/Dream-v0`).

    Args:
        checkpoint: a run or checkpoint directory (or a WorldModel).
        data: rollouts to start dreams from, or a `Contexts` (default: the run's own data, as
            recorded at training).
        context: steps of real context per start (default 16).
        max_steps: steps before truncation (default 500).
        sample: sample latents and terminations (default: the expected latent and the 0.5 threshold).
        render_mode: None or "rgb_array".
        device: "cpu" or "cuda".
        env: the real env the dreams stand for (a Gymnasium id or worldssm env name), if any: its
            observation and action spaces must be the model's (else a WorldssmError names the
            field that differs).
        state_dtype: how the engine stores SSM states, "float32" or "bfloat16" (half the bytes
            per dream; see `Engine`); None: the model's config.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, checkpoint, data=None, context: int = DEFAULT_CONTEXT, max_steps: int = DEFAULT_MAX_STEPS,
                 sample: bool = False, render_mode: str | None = None, device: str = "cpu",
                 env: str | None = None, state_dtype: str | None = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        model, contexts = _source(checkpoint, data, context, device, env)
        self.dreams = Dreams(model, 1, contexts, max_steps, sample, device, state_dtype)
        self.observation_space, self.action_space = self.dreams.observation_space, self.dreams.action_space
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        context = (options or {}).get("context")
        self.dreams.start(np.array([0]), self.np_random, context)
        return self.dreams.obs[0].copy(), {}

    def step(self, action):
        a = np.asarray(action)[None]
        obs, rew, term, trunc = self.dreams.step(a, self.np_random)
        return obs[0], float(rew[0]), bool(term[0]), bool(trunc[0]), {}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return render_observation(self.dreams.obs[0], self.observation_space)

    def close(self):
        pass


def render_observation(obs: np.ndarray, space, size: int = 256) -> np.ndarray:
    """An RGB picture of one observation: the frame itself (scaled up) for images, else a bar per
    dimension, its height the value's place between the space's bounds."""
    if space.dtype == np.uint8 and obs.ndim == 3:
        k = max(1, size // obs.shape[0])
        return np.kron(obs, np.ones((k, k, 1), np.uint8))
    x = obs.reshape(-1).astype(np.float64)
    low, high = space.low.reshape(-1).astype(np.float64), space.high.reshape(-1).astype(np.float64)
    frac = np.clip((x - low) / np.maximum(high - low, 1e-9), 0, 1)
    img = np.full((size, size, 3), 255, np.uint8)
    width = max(1, size // max(1, x.size))
    for i, f in enumerate(frac):
        top = int(round((1 - f) * (size - 1)))
        img[top:, i * width:(i + 1) * width - 1] = (40, 90, 200)
    return img


class DreamVectorEnv(gym.vector.VectorEnv):
    """`num_envs` dreams as a `gymnasium.vector.VectorEnv`: one batched model call per step for all
    of them. Autoreset (`metadata["autoreset_mode"]`) is Gymnasium's default, next-step: a dream
    that ended is started again from fresh real context on the following `step`, which returns
    its first observation with reward 0 and ignores its action. With `autoreset_mode="SameStep"`
    it starts again within the step that ended it: that step returns the new first observation,
    and the last one of the ended dream is in `info["final_obs"][i]` (`info["_final_obs"][i]`
    True), as libraries that reset inside `step` (stable-baselines3's VecEnv) expect.

    Args: as `DreamEnv`, plus `num_envs` and `autoreset_mode` ("NextStep", the default, or
        "SameStep": the values of `gymnasium.vector.AutoresetMode`).
    """

    metadata = {"render_modes": [], "autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP}

    def __init__(self, checkpoint, num_envs: int, data=None, context: int = DEFAULT_CONTEXT,
                 max_steps: int = DEFAULT_MAX_STEPS, sample: bool = False, device: str = "cpu",
                 env: str | None = None, autoreset_mode: str = "NextStep", state_dtype: str | None = None):
        modes = {m.value: m for m in (gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.SAME_STEP)}
        if autoreset_mode not in modes:
            raise ValueError(f"autoreset_mode must be one of {sorted(modes)}, got {autoreset_mode!r}")
        self.metadata = {**self.metadata, "autoreset_mode": modes[autoreset_mode]}
        model, contexts = _source(checkpoint, data, context, device, env)
        self.dreams = Dreams(model, num_envs, contexts, max_steps, sample, device, state_dtype)
        self.num_envs = num_envs
        self.single_observation_space = self.dreams.observation_space
        self.single_action_space = self.dreams.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self._done = np.zeros(num_envs, bool)
        self.render_mode = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed) if seed is not None \
            else (self.np_random, self._np_random_seed)
        self.dreams.start(np.arange(self.num_envs), self.np_random, (options or {}).get("context"))
        self._done[:] = False
        return self.dreams.obs.copy(), {}

    def step(self, actions):
        if self.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP:
            return self._step_same(actions)
        done = self._done.copy()
        obs, rew, term, trunc = self.dreams.step(np.asarray(actions), self.np_random)
        if done.any():  # next-step autoreset: these rows start afresh and report their first step
            rows = np.flatnonzero(done)
            self.dreams.start(rows, self.np_random)
            obs[rows] = self.dreams.obs[rows]
            rew[rows], term[rows], trunc[rows] = 0.0, False, False
        self._done = term | trunc
        return obs, rew, term, trunc, {}

    def _step_same(self, actions):
        obs, rew, term, trunc = self.dreams.step(np.asarray(actions), self.np_random)
        done = term | trunc
        if not done.any():
            return obs, rew, term, trunc, {}
        rows = np.flatnonzero(done)
        final = np.full(self.num_envs, None, object)  # as Gymnasium's vector envs: None where not ended
        for i in rows:
            final[i] = obs[i].copy()
        self.dreams.start(rows, self.np_random)
        obs[rows] = self.dreams.obs[rows]
        return obs, rew, term, trunc, {"final_obs": final, "_final_obs": done}


class DreamParallelEnv:
    """Agents that each dream on their own state, with PettingZoo's Parallel API (duck-typed, so
    pettingzoo need not be installed to use it; its `parallel_api_test` passes): `n_agents` start
    from real context at `reset`; an agent whose dream ends leaves for good (it is never revived);
    the episode is over when none is left.

    Args: as `DreamEnv`, plus `n_agents`.
    """

    metadata = {"render_modes": [], "name": "worldssm_dream_parallel_v0", "is_parallelizable": True}

    def __init__(self, checkpoint, n_agents: int, data=None, context: int = DEFAULT_CONTEXT,
                 max_steps: int = DEFAULT_MAX_STEPS, sample: bool = False, device: str = "cpu",
                 env: str | None = None, state_dtype: str | None = None):
        model, contexts = _source(checkpoint, data, context, device, env)
        self.dreams = Dreams(model, n_agents, contexts, max_steps, sample, device, state_dtype)
        self.possible_agents = [f"agent_{i}" for i in range(n_agents)]
        self.agents: list[str] = []
        self.render_mode = None
        self._rng = np.random.default_rng()

    @property
    def unwrapped(self):
        return self

    def observation_space(self, agent):
        return self.dreams.observation_space

    def action_space(self, agent):
        return self.dreams.action_space

    @property
    def num_agents(self) -> int:
        return len(self.agents)

    @property
    def max_num_agents(self) -> int:
        return len(self.possible_agents)

    def reset(self, seed: int | None = None, options: dict | None = None):
        self._rng = np.random.default_rng(seed)
        self.dreams.start(np.arange(len(self.possible_agents)), self._rng, (options or {}).get("context"))
        self.agents = list(self.possible_agents)
        obs = {a: self.dreams.obs[i].copy() for i, a in enumerate(self.possible_agents)}
        return obs, {a: {} for a in self.agents}

    def step(self, actions: dict):
        missing = [a for a in self.agents if a not in actions]
        unknown = [a for a in actions if a not in self.agents]
        if missing or unknown:
            raise ValueError(f"actions must name exactly the live agents; missing {missing}, not live {unknown}")
        full = np.stack([np.asarray(actions.get(a, self.dreams.action_space.sample())) for a in self.possible_agents])
        obs, rew, term, trunc = self.dreams.step(full, self._rng)
        idx = {a: i for i, a in enumerate(self.possible_agents)}
        live = list(self.agents)
        out = ({a: obs[idx[a]] for a in live}, {a: float(rew[idx[a]]) for a in live},
               {a: bool(term[idx[a]]) for a in live}, {a: bool(trunc[idx[a]]) for a in live}, {a: {} for a in live})
        self.agents = [a for a in live if not (term[idx[a]] or trunc[idx[a]])]
        return out

    def render(self):
        return None

    def close(self):
        pass

    def state(self):
        return self.dreams.obs.copy()
