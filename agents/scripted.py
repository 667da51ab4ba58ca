"""Scripted agents: random, a fixed pattern, and swarm_v0's greedy food seeker.

Each draws its randomness from (seed, tick) (`base.TickStream`), so a restarted actor replays it.
"""

from __future__ import annotations

import numpy as np

from worldssm.agents.base import AgentInfo, TickStream
from worldssm.errors import AgentError
from worldssm.spaces import sample_batch


class RandomAgent:
    """Uniform actions over a SPACE dict (unbounded Box dims: standard normal).

    Args:
        action_space: SPACE dict of the actions.
        seed: seed of the agent's random stream.
    """

    def __init__(self, action_space: dict, seed: int = 0):
        self.space, self.stream = action_space, TickStream(seed)

    def act(self, obs: np.ndarray, info: AgentInfo) -> np.ndarray:
        x = sample_batch(self.space, info.num_agents, self.stream.at(info.tick))
        return x if self.space["type"] == "discrete" else x.astype(np.float32, copy=False)


class PatternAgent:
    """A fixed per-agent pattern that needs no observation (so it also acts in a dream): a sine
    sweep over a Box, a cycle over a Discrete, phase-shifted by agent id."""

    def __init__(self, action_space: dict, seed: int = 0):
        self.space = action_space

    def act(self, obs: np.ndarray, info: AgentInfo) -> np.ndarray:
        ids, tick = np.asarray(info.ids, np.int64), int(info.tick)
        if self.space["type"] == "discrete":
            return ((ids + tick // 4) % int(self.space["n"])).astype(np.int64)
        low = np.asarray(self.space["low"], np.float64)
        high = np.asarray(self.space["high"], np.float64)
        low, high = np.where(np.isfinite(low), low, -1.0), np.where(np.isfinite(high), high, 1.0)
        phase = np.sin(0.1 * tick + 0.7 * ids).reshape(-1, *([1] * low.ndim))  # [A, 1...]
        return ((low + high) / 2 + (high - low) / 2 * phase).astype(np.float32)


class GreedyAgent:
    """swarm_v0's food seeker: head for the nearest visible food, wander when none is seen, act
    randomly with probability `noise`. It reads the env's state, so it acts only beside a real
    SwarmEnv (in an EnvActor or `collect`), for every live agent of that env in row order, or for
    the rows `info.env_rows` names when it shares the env with agents of other kinds.

    Args:
        env: the SwarmEnv the agent's rows live in.
        seed: seed of the agent's random stream.
        noise: per-agent, per-tick probability of a uniformly random action.
    """

    def __init__(self, env, seed: int = 0, noise: float = 0.1):
        from worldssm.envs.swarm import SwarmEnv

        if not isinstance(env, SwarmEnv):
            raise AgentError(f"the greedy agent reads a swarm_v0 env's food; got {type(env).__name__}")
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {noise}")
        self.env, self.stream, self.noise = env, TickStream(seed), float(noise)

    def act(self, obs: np.ndarray, info: AgentInfo) -> np.ndarray:
        from worldssm.envs.swarm.steer import food_seeking_actions

        if info.env_rows is None and info.num_agents != self.env.num_agents:
            raise ValueError(f"the greedy agent acts for the {self.env.num_agents} agents of its env (or the "
                             f"subset info.env_rows names), got {info.num_agents} rows")
        actions = food_seeking_actions(self.env, self.stream.at(info.tick), self.noise)
        return actions if info.env_rows is None else actions[info.env_rows]
