"""Who is where: how a SimConfig's agents spread over EnvActors and EngineActors.

A `Topology` is computed once from the config and never changes (a restarted actor takes its
predecessor's place). The executors and the timing maths read it; nobody reaches back into the
Simulation for these facts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from worldssm.agents.planners import PLANNER_PRESETS
from worldssm.agents.registry import PLANNER
from worldssm.sim.config import SimConfig


@dataclass(frozen=True)
class Topology:
    """The actor layout of one Simulation.

    EnvActor e feeds EngineActor `e % n_engine`, which owns a pool of `pool` slots for each of
    its EnvActors plus `dream_room` slots for dream agents, plus `plan_room` for the candidates
    of planning agents (samples x particles slots for each, while it decides).
    """

    n_env: int  # EnvActors (0 in dream mode)
    n_engine: int  # EngineActors
    agents_per_env: tuple  # per EnvActor: agents at reset in each of its batched envs
    envs_of: tuple  # per EngineActor: the EnvActors feeding it
    pool: int  # engine slots reserved per EnvActor (agents joining mid-step need headroom)
    dream_room: int  # dream agents each EngineActor can hold
    plan_room: tuple = ()  # per EngineActor: slots for planners' candidates
    plans: bool = False  # real agents plan in the EngineActors: env steps wait for the engine

    @classmethod
    def build(cls, cfg: SimConfig) -> Topology:
        """Real agents split as evenly as possible over the EnvActors (never an empty one), then
        over each actor's envs (rounded up where they do not divide)."""
        n_env = min(cfg.env_actors, cfg.n_real)
        per_actor = [cfg.n_real // max(1, n_env) + (e < cfg.n_real % max(1, n_env)) for e in range(n_env)]
        per_env = tuple(math.ceil(n / cfg.envs_per_actor) for n in per_actor)
        envs_of = tuple(tuple(e for e in range(n_env) if e % cfg.engine_actors == j)
                        for j in range(cfg.engine_actors))
        pool = math.ceil(max(per_env, default=0) * cfg.envs_per_actor * cfg.slot_headroom) + 2
        dream_room = 2 * math.ceil(cfg.n_dream / cfg.engine_actors) + 16
        p = PLANNER_PRESETS[cfg.planner]
        copies = p.samples * p.particles
        real = math.ceil(pool * cfg.planner_share()) + 1 if cfg.plans else 0  # planning agents per EnvActor, at most
        dream = dream_room if cfg.dream_agent_name == PLANNER else 0
        plan_room = tuple((real * len(envs_of[j]) + dream) * copies for j in range(cfg.engine_actors))
        return cls(n_env, cfg.engine_actors, per_env, envs_of, pool, dream_room, plan_room, cfg.plans)

    def engine_of(self, env_actor: int) -> int:
        """The EngineActor an EnvActor feeds."""
        return env_actor % self.n_engine

    def capacity(self, engine: int) -> int:
        """Slab slots EngineActor `engine` needs."""
        room = self.plan_room[engine] if self.plan_room else 0
        return self.pool * len(self.envs_of[engine]) + self.dream_room + room

    def row_of(self, env_actor: int) -> int:
        """The position of an EnvActor among those feeding its EngineActor (its payload's index)."""
        return self.envs_of[self.engine_of(env_actor)].index(env_actor)


def assign_kinds(shares, n: int, have=None) -> np.ndarray:
    """Kinds (indices into `shares`) for `n` agents joining rows whose kinds are `have`: each
    takes the kind furthest below its share of the rows (ties: the first kind). From no rows and
    integer `shares` summing to n, every kind gets exactly its share, well mixed along the rows."""
    shares = np.asarray(shares, np.float64)
    if shares.size == 1:
        return np.zeros(n, np.int64)
    shares = shares / shares.sum()
    have = np.zeros(0, np.int64) if have is None else np.asarray(have, np.int64)
    count = np.bincount(have, minlength=shares.size).astype(np.float64)
    out = np.empty(n, np.int64)
    for i in range(n):
        k = int(np.argmax(shares * (count.sum() + 1) - count))
        out[i] = k
        count[k] += 1
    return out
