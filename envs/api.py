"""The batched array API that the engine drives, and the action checks every env shares.

Contract of a `BatchedEnv` (numpy only, no Python loop per agent in the built-in envs):

- Agents are named by int64 ids. Within an episode an id is never reused; ids restart at 0 on
  `reset()` and stay below `max_agent_ids`. `agent_name(i)` gives the PettingZoo name
  (`"agent_{i}"` unless the env says otherwise).
- `agent_ids`: int64 [A], the live agents, in row order. Every per-agent array below uses this
  order.
- `reset(seed=None, options=None) -> (obs, info)`: obs [A, *obs_shape]; `info["agent_ids"]`
  int64 [A]. `seed=None` after the first reset continues the env's random stream.
- `step(actions) -> (obs, reward, terminated, truncated, info)`: `actions` [A, *act_shape], one
  row per agent of `agent_ids` as it was before the step. The returned arrays cover the same A
  rows: obs [A, *obs_shape] (the final observation for an agent that ended), reward float32 [A],
  terminated bool [A], truncated bool [A]; `info["agent_ids"]` int64 [A] repeats their ids.
  Agents that joined during the step are in `info["spawned_ids"]` int64 [J] with their first
  observations `info["spawned_obs"]` [J, *obs_shape]. After the step
  `agent_ids == concat(info["agent_ids"][~(terminated | truncated)], info["spawned_ids"])`.
- The episode is over when `agent_ids` is empty; `step` then raises and the caller resets. There
  is no hidden autoreset: an env that restarts sub-episodes says so in
  `metadata["autoreset_mode"]` and reports the restart as a leave plus a join with a fresh id.
- Bad actions raise `ValueError` naming the agent and the problem, before any state changes.
"""

from __future__ import annotations

import numpy as np


def default_agent_name(agent_id: int) -> str:
    """The PettingZoo name of agent `agent_id` in the built-in envs and Gymnasium adapters."""
    return f"agent_{int(agent_id)}"


class BatchedEnv:
    """Base class of envs stepped as arrays over all live agents (see the module docstring).

    Subclasses set `metadata`, `render_mode`, `max_agent_ids`, `agent_ids`, the two single-agent
    spaces and implement `reset`, `step`, `render` and `close`.
    """

    metadata: dict = {"render_modes": []}
    render_mode: str | None = None
    max_agent_ids: int = 0
    agent_ids: np.ndarray = np.zeros(0, np.int64)

    @property
    def num_agents(self) -> int:
        """Number of live agents A."""
        return int(self.agent_ids.shape[0])

    def agent_name(self, agent_id: int) -> str:
        """The PettingZoo name of an agent id."""
        return default_agent_name(agent_id)

    @property
    def single_observation_space(self):
        raise NotImplementedError

    @property
    def single_action_space(self):
        raise NotImplementedError

    def reset(self, seed: int | None = None, options: dict | None = None):
        raise NotImplementedError

    def step(self, actions: np.ndarray):
        raise NotImplementedError

    def render(self):
        return None

    def close(self) -> None:
        return None


def check_discrete_actions(actions, names, n: int, start: int = 0) -> np.ndarray:
    """Validate discrete actions for A agents and return them as int64 [A].

    Args:
        actions: integer array [A].
        names: A agent names, used in error messages.
        n: number of actions; valid values are `start .. start + n - 1`.
        start: first valid action.

    Raises:
        ValueError: wrong type, shape or dtype, or a value out of range (naming the agent).
    """
    if not isinstance(actions, np.ndarray):
        raise ValueError(f"actions must be a numpy array, got {type(actions).__name__}")
    if actions.shape != (len(names),):
        raise ValueError(
            f"actions have shape {actions.shape}, expected ({len(names)},): one discrete action "
            "per live agent, in agent_ids order"
        )
    if actions.dtype == np.bool_ or not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(f"actions have dtype {actions.dtype}, expected an integer dtype")
    bad = (actions < start) | (actions >= start + n)
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(
            f"{names[row]}: action {actions[row]} is out of range [{start}, {start + n})"
        )
    return actions.astype(np.int64, copy=False)


def check_box_actions(actions, names, shape: tuple) -> np.ndarray:
    """Validate continuous actions for A agents and return them as float32 [A, *shape].

    Args:
        actions: floating array [A, *shape].
        names: A agent names, used in error messages.
        shape: shape of one agent's action.

    Raises:
        ValueError: wrong type, shape or dtype, or a NaN / infinite value (naming the agent).
    """
    if not isinstance(actions, np.ndarray):
        raise ValueError(f"actions must be a numpy array, got {type(actions).__name__}")
    expected = (len(names), *shape)
    if actions.shape != expected:
        raise ValueError(
            f"actions have shape {actions.shape}, expected {expected}: one action of shape "
            f"{tuple(shape)} per live agent, in agent_ids order"
        )
    if not np.issubdtype(actions.dtype, np.floating):
        raise ValueError(f"actions have dtype {actions.dtype}, expected a floating dtype")
    finite = np.isfinite(actions).reshape(len(names), -1).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise ValueError(f"{names[row]}: action {actions[row]} contains NaN or infinity")
    return actions.astype(np.float32, copy=False)


class LazyNames:
    """Agent names for ids, built only when an error message needs one (no per-step loop)."""

    def __init__(self, ids: np.ndarray, name_fn):
        self.ids = ids
        self.name_fn = name_fn

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, row: int) -> str:
        return f"{self.name_fn(int(self.ids[row]))} (row {row})"
