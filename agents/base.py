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
        env_rows: int64 [A] or None: where these agents sit among the rows of the env they act
            in, when they are a subset of them (agents of several kinds share an env); None: they
            are all of its rows, in order.
    """

    ids: np.ndarray
    tick: int
    first: np.ndarray
    pred_reward: np.ndarray | None = None
    pred_cont: np.ndarray | None = None
    env_rows: np.ndarray | None = None

    @property
    def num_agents(self) -> int:
        return int(self.ids.shape[0])

    def rows(self, index) -> AgentInfo:
        """The same info for a subset of rows (an index array or a slice); `env_rows` follows."""
        pick = (lambda a: None if a is None else a[index])
        rows = np.arange(self.num_agents)[index] if self.env_rows is None else self.env_rows[index]
        return AgentInfo(self.ids[index], self.tick, self.first[index], pick(self.pred_reward),
                         pick(self.pred_cont), np.asarray(rows, np.int64))


@runtime_checkable
class Agent(Protocol):
    """Anything with `act(obs [A, ...], info: AgentInfo) -> actions [A, ...]`."""

    def act(self, obs: np.ndarray, info: AgentInfo) -> np.ndarray:
        ...


class TickStream:
    """The random stream of one agent object at each tick: a function of (seed, tick) only, so an
    actor restarted at tick t draws what the lost one would have drawn, whatever came before.

    A Philox generator keyed by the seed, its counter set to (0, tick, 0, 0) at each `at(tick)`:
    every tick owns 2**64 counter blocks of its own, and re-keying costs about 2 us where a new
    generator from a seed sequence costs about 9 (this runs for every agent object every tick).
    """

    _MASK = 2**64 - 1

    def __init__(self, seed: int):
        self._bits = np.random.Philox(key=int(seed) & self._MASK)
        self._gen = np.random.Generator(self._bits)
        self._state = self._bits.state

    def at(self, tick: int) -> np.random.Generator:
        state = self._state
        state["state"]["counter"] = np.array([0, int(tick) & self._MASK, 0, 0], np.uint64)
        state["buffer_pos"], state["has_uint32"], state["uinteger"] = 4, 0, 0
        self._bits.state = state
        return self._gen
