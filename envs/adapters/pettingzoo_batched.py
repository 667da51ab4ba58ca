"""Any PettingZoo `ParallelEnv` behind the batched API, so the engine can drive it.

Agent ids are indices into the env's `possible_agents`; `agent_name(i)` gives its own names back.
All agents must share one observation space and one action space (arrays are stacked). Rows
follow the env's `agents` order at reset; afterwards survivors keep their order and agents that
joined are appended, as the batched contract says. An agent the env leaves out of the
observation dict in the step it ends gets zeros there and `info["missing_obs"]` lists its row.
"""

from __future__ import annotations

import numpy as np

from worldssm.envs.api import BatchedEnv, LazyNames, check_box_actions, check_discrete_actions


class BatchedFromParallel(BatchedEnv):
    """The batched API over a PettingZoo ParallelEnv.

    Args:
        env: the ParallelEnv (not reset yet, or reset: `reset()` is called again anyway).
    """

    def __init__(self, env):
        self.env = env
        self.names = list(env.possible_agents)
        self.max_agent_ids = len(self.names)
        self._id_of = {name: i for i, name in enumerate(self.names)}
        first = self.names[0]
        self._obs_space = env.observation_space(first)
        self._act_space = env.action_space(first)
        for name in self.names[1:]:
            if env.observation_space(name) != self._obs_space:
                raise ValueError(f"{name}: observation space differs from {first}'s; the batched "
                                 "API needs one shared space")
            if env.action_space(name) != self._act_space:
                raise ValueError(f"{name}: action space differs from {first}'s")
        if not hasattr(self._act_space, "n") and not hasattr(self._act_space, "low"):
            raise ValueError(f"action space {self._act_space} is not Discrete or Box")
        self.metadata = dict(getattr(env, "metadata", {}))
        self.metadata.setdefault("autoreset_mode", "Disabled")
        self.render_mode = getattr(env, "render_mode", None)
        self.agent_ids = np.zeros(0, np.int64)

    def agent_name(self, agent_id: int) -> str:
        return self.names[agent_id]

    @property
    def single_observation_space(self):
        return self._obs_space

    @property
    def single_action_space(self):
        return self._act_space

    def _stack(self, obs: dict, names) -> tuple[np.ndarray, list]:
        shape, dtype = self._obs_space.shape, self._obs_space.dtype
        out = np.zeros((len(names), *shape), dtype)
        missing = []
        for r, name in enumerate(names):
            if name in obs:
                out[r] = obs[name]
            else:
                missing.append(r)
        return out, missing

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, infos = self.env.reset(seed=seed, options=options)
        names = list(self.env.agents)
        self.agent_ids = np.array([self._id_of[n] for n in names], np.int64)
        stacked, _ = self._stack(obs, names)
        return stacked, {"agent_ids": self.agent_ids.copy(),
                         "agent_infos": [infos.get(n, {}) for n in names]}

    def step(self, actions):
        if self.num_agents == 0:
            raise ValueError("no live agents: the episode is over, call reset()")
        lazy = LazyNames(self.agent_ids, self.agent_name)
        space = self._act_space
        if hasattr(space, "n"):
            actions = check_discrete_actions(actions, lazy, int(space.n), int(space.start))
        else:
            actions = check_box_actions(actions, lazy, space.shape)
        rows = self.agent_ids
        names = [self.names[i] for i in rows.tolist()]
        obs, rew, term, trunc, infos = self.env.step(dict(zip(names, actions)))
        stacked, missing = self._stack(obs, names)
        reward = np.array([rew.get(n, 0.0) for n in names], np.float32)
        terminated = np.array([bool(term.get(n, False)) for n in names], bool)
        truncated = np.array([bool(trunc.get(n, False)) for n in names], bool)
        before = set(names)
        joined = [n for n in self.env.agents if n not in before]
        new_ids = np.array([self._id_of[n] for n in joined], np.int64)
        new_obs, _ = self._stack(obs, joined)
        done = terminated | truncated
        self.agent_ids = np.concatenate([rows[~done], new_ids])
        info = {"agent_ids": rows, "spawned_ids": new_ids, "spawned_obs": new_obs,
                "agent_infos": [infos.get(n, {}) for n in names],
                "spawned_infos": [infos.get(n, {}) for n in joined], "missing_obs": missing}
        return stacked, reward, terminated, truncated, info

    def render(self):
        return self.env.render()

    def close(self):
        self.env.close()
