"""Scripted swarm policies for collecting diverse data: greedy food seeking with noise, random.

Both follow the Agent protocol `act(obs, info) -> actions` over all live agents at once and work
with vector or image observations (the greedy one reads the env's nearest-food vectors).
"""

from __future__ import annotations

import numpy as np

from worldssm.envs.swarm.core import MOVES


def direction_to_discrete(vec: np.ndarray) -> np.ndarray:
    """Discrete move (0..4) closest to each direction [A, 2]; 0 (stay) for a zero vector."""
    score = vec @ MOVES[1:].T  # [A, 4]
    best = np.argmax(score, axis=1) + 1
    return np.where(np.abs(vec).sum(axis=1) > 0, best, 0).astype(np.int64)


class RandomPolicy:
    """Uniform random actions.

    Args:
        env: a SwarmEnv (for the action mode and the live agent count).
        seed: seed of the policy's own random stream.
    """

    def __init__(self, env, seed: int | None = None):
        self.env = env
        self.rng = np.random.default_rng(seed)

    def act(self, obs=None, info=None) -> np.ndarray:
        n = self.env.num_agents
        if self.env.cfg.action_mode == "discrete":
            return self.rng.integers(0, len(MOVES), n, dtype=np.int64)
        return self.rng.uniform(-1.0, 1.0, (n, 2)).astype(np.float32)


class GreedyFoodSeeker:
    """Head for the nearest visible food; wander when none is seen; act randomly with prob `noise`.

    Wandering keeps a heading per agent that turns slowly, so agents explore instead of jittering.

    Args:
        env: a SwarmEnv.
        noise: probability of a uniformly random action per agent and tick.
        seed: seed of the policy's own random stream.
    """

    def __init__(self, env, noise: float = 0.1, seed: int | None = None):
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {noise}")
        self.env = env
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.random = RandomPolicy(env, seed=None)
        self.random.rng = self.rng

    def act(self, obs=None, info=None) -> np.ndarray:
        env = self.env
        n = env.num_agents
        target = env.nearest_food_vectors()  # [A, 2]
        # A per-agent heading (golden-angle spread over ids) that turns slowly with time.
        angle = env.agent_ids * 2.399 + env.t * 0.03  # [A]
        wander = np.stack([np.cos(angle), np.sin(angle)], axis=1)
        seen = np.abs(target).sum(axis=1) > 0
        direction = np.where(seen[:, None], target, wander).astype(np.float32)
        if env.cfg.action_mode == "discrete":
            action = direction_to_discrete(direction)
        else:
            norm = np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-6)
            action = (direction / norm).astype(np.float32)
        flip = self.rng.random(n) < self.noise
        if flip.any():
            action[flip] = self.random.act()[flip]
        return action


POLICIES = {"greedy": GreedyFoodSeeker, "random": RandomPolicy}
