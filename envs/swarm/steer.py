"""Steering rules of swarm_v0 that read the env's state: the food-seeking controller and random
moves. They drive the other agents of the single-agent view (`worldssm/Swarm-v0`) and back the
greedy agent of `worldssm.agents` (which is where agents live; this is env knowledge they use).
"""

from __future__ import annotations

import numpy as np

from worldssm.envs.swarm.core import MOVES


def direction_to_discrete(vec: np.ndarray) -> np.ndarray:
    """Discrete move (0..4) closest to each direction [A, 2]; 0 (stay) for a zero vector."""
    score = vec @ MOVES[1:].T  # [A, 4]
    best = np.argmax(score, axis=1) + 1
    return np.where(np.abs(vec).sum(axis=1) > 0, best, 0).astype(np.int64)


def random_actions(env, rng: np.random.Generator) -> np.ndarray:
    """Uniform random actions for every live agent of a SwarmEnv, in `agent_ids` order."""
    n = env.num_agents
    if env.cfg.action_mode == "discrete":
        return rng.integers(0, len(MOVES), n, dtype=np.int64)
    return rng.uniform(-1.0, 1.0, (n, 2)).astype(np.float32)


def food_seeking_actions(env, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Head for the nearest visible food; wander when none is seen; with probability `noise` per
    agent take a uniformly random action instead. Rows follow `env.agent_ids`.

    Wandering follows a per-agent heading (golden-angle spread over ids) that turns slowly with
    the env's time, so agents explore instead of jittering.
    """
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise}")
    n = env.num_agents
    target = env.nearest_food_vectors()  # [A, 2]
    angle = env.agent_ids * 2.399 + env.t * 0.03  # [A]
    wander = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    seen = np.abs(target).sum(axis=1) > 0
    direction = np.where(seen[:, None], target, wander).astype(np.float32)
    if env.cfg.action_mode == "discrete":
        action = direction_to_discrete(direction)
    else:
        norm = np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-6)
        action = (direction / norm).astype(np.float32)
    flip = rng.random(n) < noise
    if flip.any():
        action[flip] = random_actions(env, rng)[flip]
    return action
