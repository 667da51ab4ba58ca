"""A user's own agent, which a Simulation builds by its import path "my_agents:FoodSniffer" inside
its actors (this directory must be importable there: run the demo from here or install it)."""

import numpy as np

MOVES = np.array([[0, 0], [0, 1], [0, -1], [-1, 0], [1, 0]], np.float32)  # swarm_v0's discrete moves


class FoodSniffer:
    """Steps toward the nearest food it sees in its observation, else patrols in a square.

    swarm_v0's vector observation ends with `k_food` (dx, dy, present) triples, nearest first.
    It reads nothing but `obs` and `info`, so it can act for dream agents too.
    """

    def __init__(self, action_space, k_food: int = 8, leg: int = 12):
        if action_space["type"] != "discrete":
            raise ValueError("FoodSniffer moves with swarm_v0's discrete actions (action_mode='discrete')")
        self.k_food, self.leg = k_food, leg

    def act(self, obs: np.ndarray, info) -> np.ndarray:
        food = obs[:, -3 * self.k_food:].reshape(len(obs), self.k_food, 3)[:, 0]  # the nearest food
        seen = food[:, 2] > 0.5
        toward = np.argmax(food[:, :2] @ MOVES[1:].T, axis=1) + 1  # the move closest to its direction
        patrol = 1 + (info.tick // self.leg + info.ids) % 4  # a square, each agent at its own phase
        return np.where(seen, toward, patrol).astype(np.int64)
