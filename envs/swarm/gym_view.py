"""Single-agent Gymnasium view of the swarm (`worldssm/Swarm-v0`).

The caller controls one agent (the first at reset, id 0); every other agent is driven by a
scripted policy. The episode terminates when the controlled agent runs out of energy and is
truncated at the swarm's `max_steps`.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from worldssm.envs.swarm.core import SwarmEnv
from worldssm.envs.swarm.steer import food_seeking_actions, random_actions

OTHERS = ("greedy", "random")


class SwarmGymEnv(gym.Env):
    """One agent of the swarm as a `gymnasium.Env`.

    Args:
        render_mode: None, "human" or "rgb_array" (the controlled agent is highlighted).
        others: scripted policy of the other agents, "greedy" or "random".
        noise: random-action probability of the greedy policy.
        **swarm: SwarmConfig fields (default n_agents=16, max_steps=500).
    """

    metadata = {"render_modes": ["human", "rgb_array"], "render_fps": 30}

    def __init__(self, render_mode: str | None = None, others: str = "greedy",
                 noise: float = 0.2, **swarm):
        if others not in OTHERS:
            raise ValueError(f"others must be one of {OTHERS}, got {others!r}")
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {noise}")
        swarm.setdefault("n_agents", 16)
        swarm["highlight_agent"] = 0
        self.swarm = SwarmEnv(render_mode=render_mode, **swarm)
        self.render_mode = render_mode
        self.observation_space = self.swarm.single_observation_space
        self.action_space = self.swarm.single_action_space
        self._others_kind = others
        self._noise = noise
        self._rng = None
        self._ego = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, info = self.swarm.reset(seed=int(self.np_random.integers(2**63)))
        self._rng = np.random.default_rng(int(self.np_random.integers(2**63)))
        self._ego = int(info["agent_ids"][0])
        return obs[0], {"agent_id": self._ego, "n_agents": self.swarm.num_agents}

    def step(self, action):
        ids = self.swarm.agent_ids
        row = int(np.searchsorted(ids, self._ego))
        if row >= ids.shape[0] or ids[row] != self._ego:
            raise ValueError("the controlled agent has left; call reset()")
        name = f"agent_{self._ego}"
        a = np.asarray(action)
        if self.swarm.cfg.action_mode == "discrete":
            if a.ndim != 0 or a.dtype.kind not in "iu":
                raise ValueError(f"{name}: action {action!r} is not an integer")
            if not 0 <= int(a) < self.action_space.n:
                raise ValueError(f"{name}: action {int(a)} is out of range [0, {self.action_space.n})")
        else:
            if a.shape != (2,) or a.dtype.kind != "f":
                raise ValueError(f"{name}: action must be a float array of shape (2,), got {a!r}")
            if not np.isfinite(a).all():
                raise ValueError(f"{name}: action {a} contains NaN or infinity")
        # Validated before the other agents' policy draws, so a bad action changes nothing.
        if self._others_kind == "greedy":
            actions = food_seeking_actions(self.swarm, self._rng, self._noise)
        else:
            actions = random_actions(self.swarm, self._rng)
        actions[row] = a
        obs, reward, terminated, truncated, info = self.swarm.step(actions)
        out_info = {"agent_id": self._ego, "n_agents": self.swarm.num_agents}
        return (obs[row], float(reward[row]), bool(terminated[row]), bool(truncated[row]),
                out_info)

    def render(self):
        return self.swarm.render()

    def close(self):
        self.swarm.close()
