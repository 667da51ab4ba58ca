"""Agents that act inside the actor holding their data: random and scripted, over any space.

`make_policy(name, space, env=None, seed=0)` returns an object with
`act(obs [A, ...], gids int64 [A], tick) -> actions [A, ...]`. For swarm_v0 envs "scripted" is the
env package's `GreedyFoodSeeker` (it reads the env); elsewhere "scripted" is a fixed pattern per
agent (a sine sweep over a Box, a cycle over a Discrete), which needs no observation and so also
runs in a dream. Randomness is derived from (seed, tick), so a restarted actor replays it.
"""

from __future__ import annotations

import numpy as np

POLICIES = ("random", "scripted")


class RandomAgent:
    """Uniform actions over a SPACE dict (unbounded Box dims: standard normal)."""

    def __init__(self, space: dict, seed: int = 0):
        self.space, self.seed = space, int(seed)

    def act(self, obs, gids, tick: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, int(tick)])
        n = len(gids)
        if self.space["type"] == "discrete":
            return rng.integers(0, int(self.space["n"]), n, dtype=np.int64)
        low = np.asarray(self.space["low"], np.float64)
        high = np.asarray(self.space["high"], np.float64)
        finite = np.isfinite(low) & np.isfinite(high)
        u = rng.uniform(0.0, 1.0, (n, *low.shape))
        x = np.where(finite, low + u * (np.where(finite, high, 1) - np.where(finite, low, 0)),
                     rng.standard_normal((n, *low.shape)))
        return x.astype(np.float32)


class PatternAgent:
    """A fixed per-agent pattern: a sine sweep over a Box, a cycle over a Discrete."""

    def __init__(self, space: dict, seed: int = 0):
        self.space = space

    def act(self, obs, gids, tick: int) -> np.ndarray:
        gids = np.asarray(gids, np.int64)
        if self.space["type"] == "discrete":
            return ((gids + tick // 4) % int(self.space["n"])).astype(np.int64)
        low = np.asarray(self.space["low"], np.float64)
        high = np.asarray(self.space["high"], np.float64)
        low, high = np.where(np.isfinite(low), low, -1.0), np.where(np.isfinite(high), high, 1.0)
        phase = np.sin(0.1 * tick + 0.7 * gids)[:, None]  # [A, 1]
        x = (low + high) / 2 + (high - low) / 2 * phase.reshape(-1, *([1] * low.ndim))
        return x.astype(np.float32)


class GreedyAgent:
    """swarm_v0's GreedyFoodSeeker behind the same interface."""

    def __init__(self, env, seed: int = 0):
        from worldssm.envs import GreedyFoodSeeker

        self.policy = GreedyFoodSeeker(env, noise=0.1, seed=seed)

    def act(self, obs, gids, tick: int) -> np.ndarray:
        return self.policy.act(obs, None)


def make_policy(name: str, space: dict, env=None, seed: int = 0):
    """The agent named `name` ("random" or "scripted") for actions in `space`."""
    if name == "random":
        return RandomAgent(space, seed)
    if name == "scripted":
        if env is not None and hasattr(env, "nearest_food_vectors"):
            return GreedyAgent(env, seed)
        return PatternAgent(space, seed)
    raise ValueError(f"unknown policy {name!r}; choose one of {POLICIES}")
