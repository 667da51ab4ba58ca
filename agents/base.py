"""The Agent protocol: one object acts for a whole batch of agents at once.

    actions = agent.act(obs, info)      # obs [A, *obs_shape] -> actions [A] or [A, *act_shape]

Rows are agents; `info` (an `AgentInfo`) names them and says what else is known this tick.
Agents live where their data is: scripted agents act in the EnvActor on real observations
(or, for dream agents, in the EngineActor on decoded ones); `collect` drives the same objects.
An agent must act for exactly the rows it is given, in their order, and must not keep
references to `obs` (the caller may reuse the buffer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class AgentInfo:
    """What an agent knows about its rows this tick besides their observations.

    Attributes:
        ids: int64 [A], the agents' ids (global ids in a Simulation, env ids in `collect`).
        tick: the tick being acted in (counts from 1 in a Simulation, 0 in `collect`).
        first: bool [A], True where this is the agent's first step of an episode.
        pred_reward: float32 [A] or None: the reward the world model predicted for arriving at
            this observation (NaN for rows it has not predicted yet). None where no engine ran.
        pred_cont: float32 [A] or None: the model's probability that the episode goes on here.
    """

    ids: np.ndarray
    tick: int
    first: np.ndarray
    pred_reward: np.ndarray | None = None
    pred_cont: np.ndarray | None = None

    @property
    def num_agents(self) -> int:
        return int(self.ids.shape[0])

    def rows(self, index) -> AgentInfo:
        """The same info for a subset of rows (an index array or a slice)."""
        pick = (lambda a: None if a is None else a[index])
        return AgentInfo(self.ids[index], self.tick, self.first[index], pick(self.pred_reward),
                         pick(self.pred_cont))


@runtime_checkable
class Agent(Protocol):
    """Anything with `act(obs [A, ...], info: AgentInfo) -> actions [A, ...]`."""

    def act(self, obs: np.ndarray, info: AgentInfo) -> np.ndarray:
        ...


def tick_rng(seed: int, tick: int) -> np.random.Generator:
    """The random stream of one agent object at one tick: a function of (seed, tick) only, so an
    actor restarted at tick t draws what the lost one would have drawn."""
    return np.random.default_rng([int(seed) & (2**63 - 1), int(tick) & (2**63 - 1)])
