"""A user's agent, imported by path ("tests.sim.user_agents:Constant") in the Simulation tests."""

import numpy as np


class Constant:
    """Acts `value` in every dimension of a Box action space; keeps the infos it was given."""

    def __init__(self, action_space, value=0.0):
        self.shape, self.value, self.infos = tuple(action_space["shape"]), float(value), []

    def act(self, obs, info):
        self.infos.append(info)
        return np.full((len(obs), *self.shape), self.value, np.float32)


def not_an_agent():
    return 42


class Always:
    """Takes one Discrete `action` for every row."""

    def __init__(self, action_space, action=0):
        if action_space["type"] != "discrete" or not 0 <= action < action_space["n"]:
            raise ValueError(f"Always needs a Discrete space that has action {action}")
        self.action = int(action)

    def act(self, obs, info):
        return np.full(len(obs), self.action, np.int64)
