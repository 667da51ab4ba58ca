"""Any Gymnasium env id as N independent agents, with the batched API.

Each agent owns one copy of the env (a Python loop over copies is unavoidable here: Gymnasium
envs step one at a time). Autoreset is explicit, chosen at construction:

- `autoreset="new_agent"` (default): in the step an env ends, the agent leaves with its final
  observation and the env is reset at once; its new episode joins as a new agent with a fresh id
  (in `info["spawned_ids"]`, first observation in `info["spawned_obs"]`), while ids remain
  (`max_agent_ids`, default 100 * n_agents); the population goes on as swarm_v0's does.
  `metadata["autoreset_mode"] == "NewAgent"`.
- `autoreset="off"`: an agent whose env ends leaves for good; the episode is over when every
  agent has left. `metadata["autoreset_mode"] == "Disabled"`.

Seeding: `reset(seed=s)` resets copy i with seed s + i; restarts use the copy's own stream.
"""

from __future__ import annotations

import numpy as np

from worldssm.envs.api import BatchedEnv, LazyNames, check_box_actions, check_discrete_actions
from worldssm.errors import require

AUTORESET = {"off": "Disabled", "new_agent": "NewAgent"}


class GymAgents(BatchedEnv):
    """N independent copies of a Gymnasium env as one batched multi-agent env.

    Args:
        env_id: a registered Gymnasium id, e.g. "CartPole-v1".
        n_agents: number of copies.
        autoreset: "new_agent" or "off" (see the module docstring).
        max_agent_ids: ids per episode; None: n_agents (off) or 100 * n_agents (new_agent).
        render_mode: passed to copy 0 only; `render()` shows copy 0.
        **env_kwargs: passed to `gymnasium.make`.
    """

    def __init__(self, env_id: str, n_agents: int = 1, autoreset: str = "new_agent",
                 max_agent_ids: int | None = None, render_mode: str | None = None,
                 **env_kwargs):
        gym = require("gymnasium", "gymnasium>=1.0")
        if n_agents < 1:
            raise ValueError(f"n_agents must be >= 1, got {n_agents}")
        if autoreset not in AUTORESET:
            raise ValueError(f"autoreset must be one of {sorted(AUTORESET)}, got {autoreset!r}")
        self.env_id = env_id
        # render_mode goes to copy 0 only, and only when set (not every env takes the argument).
        self.envs = [gym.make(env_id, **({"render_mode": render_mode} if render_mode and i == 0 else {}),
                              **env_kwargs) for i in range(n_agents)]
        self.n_copies = n_agents
        self.autoreset = autoreset
        default_ids = n_agents if autoreset == "off" else 100 * n_agents
        self.max_agent_ids = max_agent_ids if max_agent_ids is not None else default_ids
        if self.max_agent_ids < n_agents:
            raise ValueError(f"max_agent_ids must be >= n_agents ({n_agents})")
        first = self.envs[0]
        self._obs_space = first.observation_space
        self._act_space = first.action_space
        spaces = gym.spaces
        if not isinstance(self._obs_space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete,
                                            spaces.MultiBinary)):
            raise ValueError(f"{env_id}: observation space {self._obs_space} cannot be stacked "
                             "into arrays (Box, Discrete, MultiDiscrete or MultiBinary needed)")
        if not isinstance(self._act_space, (spaces.Box, spaces.Discrete)):
            raise ValueError(f"{env_id}: action space {self._act_space} is not Box or Discrete")
        self.render_mode = render_mode
        self.metadata = {
            "render_modes": list(first.metadata.get("render_modes", [])),
            "render_fps": first.metadata.get("render_fps", 30),
            "name": f"gym_agents:{env_id}",
            "is_parallelizable": True,
            "autoreset_mode": AUTORESET[autoreset],
        }
        self.agent_ids = np.zeros(0, np.int64)
        self._slots = np.zeros(0, np.int64)  # env copy of each live row
        self.next_id = 0

    @property
    def single_observation_space(self):
        return self._obs_space

    @property
    def single_action_space(self):
        return self._act_space

    def _obs(self, o) -> np.ndarray:
        return np.asarray(o, dtype=self._obs_space.dtype)

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, infos = [], []
        for i, env in enumerate(self.envs):
            o, info = env.reset(seed=None if seed is None else seed + i)
            obs.append(self._obs(o))
            infos.append(info)
        self.agent_ids = np.arange(self.n_copies, dtype=np.int64)
        self._slots = np.arange(self.n_copies, dtype=np.int64)
        self.next_id = self.n_copies
        return np.stack(obs), {"agent_ids": self.agent_ids.copy(), "agent_infos": infos}

    def _check(self, actions) -> np.ndarray:
        if self.num_agents == 0:
            raise ValueError("no live agents: the episode is over, call reset()")
        names = LazyNames(self.agent_ids, self.agent_name)
        space = self._act_space
        if hasattr(space, "n"):
            return check_discrete_actions(actions, names, int(space.n), int(space.start))
        return check_box_actions(actions, names, space.shape)

    def step(self, actions):
        actions = self._check(actions)
        rows = self.agent_ids
        n = rows.shape[0]
        obs = np.empty((n, *self._obs_space.shape), self._obs_space.dtype)
        reward = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        infos, new_ids, new_obs, new_infos, new_slots = [], [], [], [], []
        for r, slot in enumerate(self._slots.tolist()):
            o, rew, term, trunc, info = self.envs[slot].step(actions[r])
            obs[r] = self._obs(o)
            reward[r] = rew
            terminated[r] = term
            truncated[r] = trunc
            infos.append(info)
            if (term or trunc) and self.autoreset == "new_agent" and self.next_id < self.max_agent_ids:
                o2, info2 = self.envs[slot].reset()
                new_ids.append(self.next_id)
                self.next_id += 1
                new_obs.append(self._obs(o2))
                new_infos.append(info2)
                new_slots.append(slot)
        done = terminated | truncated
        new_ids = np.asarray(new_ids, np.int64)
        self.agent_ids = np.concatenate([rows[~done], new_ids])
        self._slots = np.concatenate([self._slots[~done], np.asarray(new_slots, np.int64)])
        spawned_obs = (np.stack(new_obs) if new_obs
                       else np.zeros((0, *self._obs_space.shape), self._obs_space.dtype))
        info = {"agent_ids": rows, "spawned_ids": new_ids, "spawned_obs": spawned_obs,
                "agent_infos": infos, "spawned_infos": new_infos}
        return obs, reward, terminated, truncated, info

    def render(self):
        return self.envs[0].render() if self.render_mode is not None else None

    def close(self):
        for env in self.envs:
            env.close()
