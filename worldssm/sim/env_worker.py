"""The EnvActor's work, as a plain class: batched envs and the agents that act in them.

One tick, from the EnvActor's side: its agents act on their current observations o_t
(overrides from the caller replace some actions) and the (slots, o_t, a_t, reset) of every agent
go to its EngineActor (`act`); then the envs step with those actions (`step_envs`), which the
engine's observe of o_t does not depend on, so the two can run at the same time. The report says
who is live, who joined and who left. The engine's predictions for the rows of the last report
come back with the next control and reach the agents in `AgentInfo`.

Agents of several kinds can share an env (`EnvActorSetup.kinds`): every row has a kind, and each
agent joining takes the kind furthest below its share of the live rows. Rows of the "planner"
kind are decided by the EngineActor, which holds their states: their payload rows are marked
`plan`, and the env step waits for the engine's actions (`step_envs(plan_actions)`).
"""

from __future__ import annotations

import time

import numpy as np

from worldssm.agents import AgentInfo, make_agent
from worldssm.agents.registry import PLANNER
from worldssm.errors import WorldssmError
from worldssm.sim.ids import agent_id
from worldssm.sim.messages import EnvActorSetup, EnvControl, EnvPayload, EnvReport, Predictions
from worldssm.sim.overrides import apply_overrides, check_overrides
from worldssm.sim.topology import assign_kinds
from worldssm.spaces import space_to_dict

_NO_IDS = np.zeros(0, np.int64)


class _EnvBatch:
    """One batched env and the bookkeeping of its live agents, row-aligned with its `agent_ids`."""

    def __init__(self, env, agents):
        self.env, self.agents = env, agents  # per kind: the agent object (None: the engine plans)
        self.kind = np.zeros(0, np.int64)  # [A] each row's kind
        self.ids = _NO_IDS  # int64 [A] simulation-wide agent ids
        self.slots = _NO_IDS  # int64 [A] engine slots
        self.first = np.zeros(0, bool)  # [A] first step of the agent's episode
        self.joined = _NO_IDS  # [A] tick each agent joined
        self.ret = np.zeros(0, np.float64)  # [A] return so far
        self.obs = None  # [A, *obs_shape] current observations
        self.layout = np.zeros(0, np.int64)  # kinds of the rows at every reset (empty: by shares)
        self.shares = None  # kinds' shares for agents joining mid-episode


class EnvWorker:
    """A batch of multi-agent envs driven through the batched API, and their agents.

    Args:
        setup: the EnvActorSetup message.
    """

    def __init__(self, setup: EnvActorSetup):
        from worldssm.envs import make

        self.index, self.row = setup.index, setup.row
        self.seed = setup.seed
        self._free = list(np.asarray(setup.slots, np.int64)[::-1])
        self.tick = 0
        self._next = setup.first_number
        self._reuse = list(setup.reuse_ids[::-1])
        self.batches: list[_EnvBatch] = []
        self.shares = np.array([k.share for k in setup.kinds], np.float64)
        per_env = setup.agents_per_env
        if setup.layout.size not in (0, setup.n_envs * per_env):
            raise WorldssmError(f"EnvWorker {self.index}: a layout of {setup.layout.size} kinds for "
                                f"{setup.n_envs} x {per_env} rows")
        self.planner_kind = next((i for i, k in enumerate(setup.kinds) if k.name == PLANNER), -1)
        for i in range(setup.n_envs):
            env = make(setup.env, api="batched", n_agents=setup.agents_per_env, **setup.env_kwargs)
            self.action_space = space_to_dict(env.single_action_space)
            self.obs_space = space_to_dict(env.single_observation_space)
            agents = [None if k.name == PLANNER else
                      make_agent(k.name, self.action_space, env=env, seed=self.seed * 1000 + i + 7919 * n,
                                 kwargs=k.kwargs) for n, k in enumerate(setup.kinds)]
            b = _EnvBatch(env, agents)
            if setup.layout.size:  # the Simulation's split of SimConfig.agents' counts
                b.layout = setup.layout[i * per_env:(i + 1) * per_env].astype(np.int64)
                b.shares = np.bincount(b.layout, minlength=self.shares.size).astype(np.float64)
            else:
                b.shares = self.shares
            self.batches.append(b)
        if self.action_space["type"] == "discrete":
            self._act_layout = ((), np.int64)
        else:
            self._act_layout = (tuple(self.action_space["shape"]), np.dtype(self.action_space["dtype"]))
        self._plan_rows: list[np.ndarray] | None = None  # per batch: rows the engine decides, until step_envs
        self._pred_index = _NO_IDS  # per current row: its row in the last report (-1: new)
        self._actions: list[np.ndarray] | None = None  # act's actions, until step_envs
        self._act_times = (0.0, 0.0)
        self._left: list[np.ndarray] = []
        self._left_returns: list[np.ndarray] = []
        self._left_kinds: list[np.ndarray] = []
        # The report of the last env step: when a tick fails after this actor stepped (its
        # EngineActor died), the driver reads who joined and left from here.
        self.last_report: EnvReport | None = None
        for i, b in enumerate(self.batches):
            self._reset_env(b, seed=self.seed * 1000 + i)

    # ----- agents -------------------------------------------------------------------------------
    def _mint(self, n: int) -> np.ndarray:
        out = np.empty(n, np.int64)
        for i in range(n):
            if self._reuse:
                out[i] = self._reuse.pop()
            else:
                out[i] = agent_id(self.index, self._next)
                self._next += 1
        return out

    def _take_slots(self, n: int) -> np.ndarray:
        if n > len(self._free):
            raise WorldssmError(f"EnvWorker {self.index}: out of engine slots ({n} needed, "
                                f"{len(self._free)} free); raise slot_headroom")
        return np.array([self._free.pop() for _ in range(n)], np.int64)

    def _reset_env(self, b: _EnvBatch, seed=None) -> None:
        if b.ids.size:
            self._leave(b, np.ones(b.ids.size, bool))
        obs, info = b.env.reset(seed=seed)
        n = len(info["agent_ids"])
        b.ids, b.slots = self._mint(n), self._take_slots(n)
        b.kind = b.layout if b.layout.size == n else assign_kinds(b.shares, n)
        b.first, b.joined = np.ones(n, bool), np.full(n, self.tick, np.int64)
        b.ret, b.obs = np.zeros(n), obs

    def _leave(self, b: _EnvBatch, mask: np.ndarray) -> None:
        self._free.extend(b.slots[mask][::-1].tolist())
        self._left.append(b.ids[mask])
        self._left_returns.append(b.ret[mask])
        self._left_kinds.append(b.kind[mask])

    def live_ids(self) -> np.ndarray:
        return np.concatenate([b.ids for b in self.batches])

    def engine_restored(self, snapshot_tick: int) -> int:
        """The engine went back to `snapshot_tick`: agents that joined later start afresh."""
        n = 0
        for b in self.batches:
            late = b.joined > snapshot_tick
            b.first |= late
            n += int(late.sum())
        return n

    # ----- the tick -----------------------------------------------------------------------------
    def act(self, ctrl: EnvControl) -> EnvPayload:
        """First half of a tick: the agents act on o_t; returns the EngineActor's payload. The
        envs step afterwards, in `step_envs`, while the engine observes."""
        t0 = time.perf_counter()
        actions, plan = self._actions_for(ctrl)  # validates everything before any state changes
        self.tick = ctrl.tick
        self._actions, self._plan_rows = actions, plan
        payload = EnvPayload(
            slots=np.concatenate([b.slots for b in self.batches]),
            obs=np.concatenate([b.obs for b in self.batches]),
            actions=np.concatenate(actions),
            resets=np.concatenate([b.first for b in self.batches]),
            plan=None if plan is None else np.concatenate(plan),
        )
        self._act_times = (t0, time.perf_counter())
        return payload

    def step_envs(self, plan_actions: np.ndarray | None = None) -> EnvReport:
        """Second half of a tick: step the envs with the actions of `act` (and, in the rows the
        engine planned, `plan_actions`, in row order); returns the report for the driver (live,
        joined and left agents, timings)."""
        t0 = time.perf_counter()
        actions, self._actions = self._actions, None
        plan, self._plan_rows = self._plan_rows, None
        if actions is None:
            raise WorldssmError(f"EnvWorker {self.index}: step_envs() without a successful act() first")
        if plan is not None:
            want = sum(int(p.sum()) for p in plan)
            if plan_actions is None or len(plan_actions) != want:
                got = "none" if plan_actions is None else len(plan_actions)
                raise WorldssmError(f"EnvWorker {self.index}: the engine planned {got} actions for {want} planner rows")
            at = 0
            for a, p in zip(actions, plan):
                k = int(p.sum())
                a[p] = plan_actions[at:at + k]
                at += k
        pred_index, joined = [], []
        offset = 0
        for b, a in zip(self.batches, actions):
            n = b.ids.size
            obs2, rew, term, trunc, info = b.env.step(a)
            ended = np.asarray(term) | np.asarray(trunc)
            b.ret += rew
            new_ids = info.get("spawned_ids", ())
            j = len(new_ids)
            if j == 0 and not ended.any():  # the common tick: the same agents in the same rows
                b.first = np.zeros(n, bool)
                b.obs = obs2
                pred_index.append(offset + np.arange(n, dtype=np.int64))
            else:
                self._leave(b, ended)
                keep = ~ended
                new, new_slots = self._mint(j), self._take_slots(j)
                b.kind = np.concatenate([b.kind[keep], assign_kinds(b.shares, j, b.kind[keep])])
                b.ids = np.concatenate([b.ids[keep], new])
                b.slots = np.concatenate([b.slots[keep], new_slots])
                b.first = np.concatenate([np.zeros(int(keep.sum()), bool), np.ones(j, bool)])
                b.joined = np.concatenate([b.joined[keep], np.full(j, self.tick, np.int64)])
                b.ret = np.concatenate([b.ret[keep], np.zeros(j)])
                b.obs = np.concatenate([obs2[keep], info["spawned_obs"].astype(obs2.dtype, copy=False)]) \
                    if j else obs2[keep]
                pred_index.append(np.concatenate([offset + np.flatnonzero(keep), np.full(j, -1)]))
                joined.append(new)
            offset += n
            if b.env.num_agents == 0:  # the episode is over: start the next one
                self._reset_env(b)
                joined.append(b.ids)
                pred_index[-1] = np.full(b.ids.size, -1)
        self._pred_index = np.concatenate(pred_index).astype(np.int64)
        left = np.concatenate(self._left) if self._left else _NO_IDS
        returns = np.concatenate(self._left_returns) if self._left_returns else np.zeros(0)
        kinds = np.concatenate(self._left_kinds).astype(np.int64) if self._left_kinds else _NO_IDS
        self._left, self._left_returns, self._left_kinds = [], [], []
        joined = np.concatenate(joined) if joined else _NO_IDS
        a0, a1 = self._act_times
        changed = bool(joined.size or left.size)  # else the same agents in the same rows
        self.last_report = EnvReport(
            index=self.index, tick=self.tick, live=self.live_ids() if changed else None,
            joined=joined if joined.size else None, left=left if left.size else None,
            left_return=returns.astype(np.float32) if left.size else None,
            left_kind=kinds if left.size else None,
            act_ms=(a1 - a0) * 1e3, step_ms=(time.perf_counter() - t0) * 1e3,
            t_act=a0, t_acted=a1, t_step=t0, t_out=time.perf_counter())
        return self.last_report

    def _actions_for(self, ctrl: EnvControl) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Per batch: the actions (placeholders where the engine plans) and, when any row plans,
        per batch the bool mask of the rows the engine decides (planner rows not overridden)."""
        if ctrl.ids is not None:
            check_overrides(ctrl.ids, ctrl.actions, self.live_ids(), self.action_space,
                            f"EnvWorker {self.index}")
        rew, cont = self._predictions(ctrl.pred)
        actions, plans, offset = [], [], 0
        shape, dtype = self._act_layout
        for b in self.batches:
            n = b.ids.size
            info = AgentInfo(ids=b.ids, tick=ctrl.tick, first=b.first, pred_reward=rew[offset:offset + n],
                             pred_cont=cont[offset:offset + n])
            if len(b.agents) == 1 and b.agents[0] is not None:  # one kind: no row gathering
                a = np.asarray(b.agents[0].act(b.obs, info))
            else:
                a = np.zeros((n, *shape), dtype)
                for k, agent in enumerate(b.agents):
                    rows = np.flatnonzero(b.kind == k)
                    if rows.size and agent is not None:
                        a[rows] = agent.act(b.obs[rows], info.rows(rows))
            actions.append(apply_overrides(a, b.ids, ctrl.ids, ctrl.actions))
            if self.planner_kind >= 0:
                plan = b.kind == self.planner_kind
                if ctrl.ids is not None:
                    plan &= ~np.isin(b.ids, ctrl.ids)  # a given action wins over the planner
                plans.append(plan)
            offset += n
        return actions, (plans if self.planner_kind >= 0 else None)

    def _predictions(self, blob: bytes | None) -> tuple[np.ndarray, np.ndarray]:
        """The engine's predictions for the current rows (NaN for agents it has not seen)."""
        n = sum(b.ids.size for b in self.batches)
        rew, cont = np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32)
        if blob is None or n == 0 or self._pred_index.size != n:  # nothing observed yet
            return rew, cont
        pred = Predictions.from_bytes(blob)
        rows = pred.values.shape[1]
        if pred.values.shape[0] != 2 or rows <= int(self._pred_index.max(initial=-1)):
            raise WorldssmError(f"EnvWorker {self.index}: predictions for {rows} rows do not cover the "
                                f"{n} rows of the last payload")
        have = self._pred_index >= 0
        rew[have] = pred.reward[self._pred_index[have]]
        cont[have] = pred.cont[self._pred_index[have]]
        return rew, cont
