"""PettingZoo `ParallelEnv` over any `BatchedEnv`: dicts keyed by agent name.

Requires pettingzoo (`pip install 'worldssm[envs]'`). Conventions (PettingZoo 1.24+):
`possible_agents` lists every name an episode may use (`max_agent_ids` of them); agents that end
get their final observation and leave `agents` in the same step; agents that join appear in
every returned dict of the step they join (reward 0, not terminated, not truncated); a name is
never revived within an episode. Per-agent spaces are created once per name and cached, so
`observation_space(a) is observation_space(a)`.
"""

from __future__ import annotations

import copy

import numpy as np

from worldssm.errors import require

_pz = require("pettingzoo.utils.env", "pettingzoo>=1.24")


class ParallelFromBatched(_pz.ParallelEnv):
    """The PettingZoo Parallel API over a batched env.

    Args:
        batched: the BatchedEnv to drive.
    """

    def __init__(self, batched):
        self.batched = batched
        self.metadata = dict(batched.metadata)
        self.render_mode = batched.render_mode
        self.possible_agents = [batched.agent_name(i) for i in range(batched.max_agent_ids)]
        self._id_of = {name: i for i, name in enumerate(self.possible_agents)}
        self.agents = []
        self._obs_spaces = {}
        self._act_spaces = {}

    @property
    def unwrapped(self):
        return self

    def observation_space(self, agent):
        space = self._obs_spaces.get(agent)
        if space is None:
            self._known(agent)
            space = self._obs_spaces[agent] = copy.deepcopy(self.batched.single_observation_space)
        return space

    def action_space(self, agent):
        space = self._act_spaces.get(agent)
        if space is None:
            self._known(agent)
            space = self._act_spaces[agent] = copy.deepcopy(self.batched.single_action_space)
        return space

    @property
    def observation_spaces(self):
        return {a: self.observation_space(a) for a in self.possible_agents}

    @property
    def action_spaces(self):
        return {a: self.action_space(a) for a in self.possible_agents}

    def _known(self, agent):
        if agent not in self._id_of:
            raise ValueError(f"unknown agent {agent!r}: not one of possible_agents")

    def _names(self, ids) -> list:
        names = self.possible_agents
        return [names[i] for i in ids.tolist()]

    def reset(self, seed=None, options=None):
        obs, info = self.batched.reset(seed=seed, options=options)
        self.agents = self._names(info["agent_ids"])
        per_agent = info.get("agent_infos") or [{} for _ in self.agents]
        return dict(zip(self.agents, obs)), dict(zip(self.agents, per_agent))

    def _to_array(self, actions: dict) -> np.ndarray:
        """Check a dict of actions against the live agents and stack it in row order."""
        if not isinstance(actions, dict):
            raise ValueError(f"actions must be a dict keyed by agent, got {type(actions).__name__}")
        live = set(self.agents)
        for name in actions:
            if name not in live:
                if name in self._id_of:
                    raise ValueError(f"{name}: got an action but the agent is not alive")
                raise ValueError(f"{name!r}: got an action for an unknown agent")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"{missing[0]}: live agent has no action ({len(missing)} missing)")
        space = self.batched.single_action_space
        shape = tuple(space.shape or ())
        kinds = "iu" if np.issubdtype(space.dtype, np.integer) else "f"
        rows = []
        for name in self.agents:
            a = np.asarray(actions[name])
            if a.shape != shape:
                raise ValueError(f"{name}: action has shape {a.shape}, expected {shape}")
            if a.dtype.kind not in kinds:
                raise ValueError(
                    f"{name}: action has dtype {a.dtype}, expected "
                    f"{'an integer' if kinds == 'iu' else 'a floating'} dtype"
                )
            rows.append(a)
        if not rows:
            return np.zeros((0, *shape), space.dtype)
        return np.stack(rows)

    def step(self, actions):
        batch = self._to_array(actions)
        obs, reward, terminated, truncated, info = self.batched.step(batch)
        names = self.agents
        new_names = self._names(info["spawned_ids"])
        rew = reward.tolist()
        term = terminated.tolist()
        trunc = truncated.tolist()
        per_agent = info.get("agent_infos") or [{} for _ in names]
        obs_d = dict(zip(names, obs))
        rew_d = dict(zip(names, rew))
        term_d = dict(zip(names, term))
        trunc_d = dict(zip(names, trunc))
        info_d = dict(zip(names, per_agent))
        if new_names:
            spawned_infos = info.get("spawned_infos") or [{} for _ in new_names]
            obs_d.update(zip(new_names, info["spawned_obs"]))
            for name, extra in zip(new_names, spawned_infos):
                rew_d[name] = 0.0
                term_d[name] = False
                trunc_d[name] = False
                info_d[name] = extra
        self.agents = self._names(self.batched.agent_ids)
        return obs_d, rew_d, term_d, trunc_d, info_d

    def render(self):
        return self.batched.render()

    def close(self):
        self.batched.close()

    def state(self):
        raise NotImplementedError("no global state() view is defined for this env")
