"""The EngineActor's work, as a plain class: an Engine, its EnvActors' slot pools, and the
agents that dream on it.

One tick, from the EngineActor's side: dream leaves, then joins, are applied; the planner
decides for the real agents whose rows are marked `plan` (all of them in one batched search,
right where their states are); every real agent of every EnvActor feeding it is observed in one
batched call (their o_t, a_t); dream agents act on their decoded observations (a planner
dreaming agent searches from its own imagined state), and are imagined in one call (a dream
agent that just joined observes its start observation instead). The result carries the
predictions for each EnvActor's rows (with the planned actions), the dream agents' rewards and
continue probabilities, and a snapshot when asked.
"""

from __future__ import annotations

import time

import numpy as np

from worldssm.agents import AgentInfo, make_agent
from worldssm.agents.planners import PlannerConfig, make_planner
from worldssm.agents.registry import PLANNER
from worldssm.errors import TickRejected
from worldssm.sim.messages import (
    ActorSpaces,
    DreamJoin,
    EngineActorSetup,
    EngineControl,
    EngineResult,
    EngineSnapshot,
    EnvPayload,
    Membership,
    Predictions,
)
from worldssm.sim.overrides import apply_overrides, check_overrides
from worldssm.spaces import first_nonfinite_row

_NO_IDS = np.zeros(0, np.int64)


class EngineWorker:
    """An Engine, the slot pools of its EnvWorkers, and the agents dreaming on it.

    Args:
        setup: the EngineActorSetup message.
    """

    def __init__(self, setup: EngineActorSetup):
        import torch

        from worldssm.engine import Engine

        self.index = setup.index
        if setup.torch_threads > 0:
            torch.set_num_threads(setup.torch_threads)
        model = setup.model.load(device="cpu")
        self.engine = Engine(model, setup.capacity, device=setup.device, sample=setup.sample,
                             seed=setup.seed, impl=setup.impl, state_dtype=setup.state_dtype)
        self.decode = setup.decode
        self.planner = None if setup.planner is None else \
            make_planner(self.engine, PlannerConfig(**setup.planner), seed=setup.seed * 7919 + self.index)
        self.dream_plans = setup.agent == PLANNER
        self.agent = None if setup.agent is None or self.dream_plans else \
            make_agent(setup.agent, self.engine.action_space, seed=setup.seed * 7919 + self.index,
                       kwargs=setup.agent_kwargs)
        self.tick = -1
        self._dream_clear()

    def _dream_clear(self) -> None:
        self.d_ids = _NO_IDS
        self.d_slots = _NO_IDS
        self.d_obs = np.zeros((0, *self.engine.obs_shape), np.float32)
        self.d_fresh = np.zeros(0, bool)  # joined; its start observation is not observed yet
        self.d_reward = np.zeros(0, np.float32)  # the model's last predictions for each dream agent
        self.d_cont = np.zeros(0, np.float32)

    def reserve(self, n: int) -> np.ndarray:
        """Slots for an EnvWorker's agents (owned for the life of the simulation)."""
        return self.engine.join(n)

    def spaces(self) -> ActorSpaces:
        """The model's spaces, and which step the engine runs (`Engine.impl`) on which device."""
        return ActorSpaces(obs=self.engine.obs_space, action=self.engine.action_space,
                           impl=self.engine.impl, device=str(self.engine.device))

    # ----- membership of dream agents -----------------------------------------------------------
    def check_membership(self, joins: list[DreamJoin], leave: np.ndarray) -> None:
        """Raise TickRejected unless the joins and leaves can be applied (nothing changes)."""
        where = f"EngineWorker {self.index}"
        if joins and self.agent is None and not self.dream_plans:
            raise TickRejected(f"{where}: no agent can act for dream agents (set SimConfig.dream_agent)")
        for j in joins:
            want = (j.ids.size, *self.engine.obs_shape)
            if j.obs.shape != want:
                raise TickRejected(f"{where}: start observations must have shape {want}, got {j.obs.shape}")
            bad = first_nonfinite_row(j.obs)
            if bad is not None:
                raise TickRejected(f"{where}: start observation of agent {int(j.ids[bad])} has NaN or "
                                   "infinite values (in float32)")
            if np.isin(j.ids, self.d_ids).any():
                raise TickRejected(f"{where}: a joining agent id is taken")
        need = sum(j.ids.size for j in joins)
        freed = int(np.isin(self.d_ids, leave).sum()) if leave.size else 0
        if need > self.engine.slab.num_free + freed:  # leaves are applied before joins
            raise TickRejected(f"{where}: {need} agents cannot join, {self.engine.slab.num_free} slots "
                               f"free and {freed} leaving")
        if leave.size and not np.isin(leave, self.d_ids).all():
            raise TickRejected(f"{where}: leaving agents are not dreaming here")

    def apply_membership(self, joins: list[DreamJoin], leave: np.ndarray) -> None:
        if leave.size:
            gone = np.isin(self.d_ids, leave)
            self.engine.leave(self.d_slots[gone])
            keep = ~gone
            self.d_ids, self.d_slots, self.d_obs = self.d_ids[keep], self.d_slots[keep], self.d_obs[keep]
            self.d_fresh, self.d_reward, self.d_cont = self.d_fresh[keep], self.d_reward[keep], self.d_cont[keep]
        for j in joins:
            n = j.ids.size
            self.d_ids = np.concatenate([self.d_ids, j.ids])
            self.d_slots = np.concatenate([self.d_slots, self.engine.join(n)])
            self.d_obs = np.concatenate([self.d_obs, j.obs.astype(np.float32)])
            self.d_fresh = np.concatenate([self.d_fresh, np.ones(n, bool)])
            self.d_reward = np.concatenate([self.d_reward, np.full(n, np.nan, np.float32)])
            self.d_cont = np.concatenate([self.d_cont, np.full(n, np.nan, np.float32)])

    def replay(self, ops: list[Membership]) -> int:
        """Re-apply membership changes logged since a snapshot; returns how many."""
        for op in ops:
            self.check_membership(op.joins, op.leave)
            self.apply_membership(op.joins, op.leave)
        return len(ops)

    # ----- the tick -----------------------------------------------------------------------------
    def tick_once(self, ctrl: EngineControl, payloads: list[EnvPayload]) -> EngineResult:
        t0 = time.perf_counter()
        leave = _NO_IDS if ctrl.leave is None else ctrl.leave
        self.check_membership(ctrl.joins, leave)
        if ctrl.ids is not None:
            live = self.d_ids[~np.isin(self.d_ids, leave)]
            check_overrides(ctrl.ids, ctrl.actions, live, self.engine.action_space, f"EngineWorker {self.index}")
        self.apply_membership(ctrl.joins, leave)
        t1 = time.perf_counter()
        d_act = None
        if self.d_ids.size:
            d_act = self._dream_actions(ctrl)
        planned = self._plan_real(payloads, ctrl.tick)
        both = np.zeros((2, 0), np.float32)  # [2, rows of every payload]: reward, continue
        if payloads:  # one observe for every real agent of every EnvWorker feeding this engine
            out = self.engine.observe(
                np.concatenate([p.slots for p in payloads]), np.concatenate([p.obs for p in payloads]),
                np.concatenate([p.actions if a is None else a for p, a in zip(payloads, planned)]),
                np.concatenate([p.resets for p in payloads]), latents=False)
            # np.stack copies out of to_host's buffer, which _dream_step reuses
            both = np.stack(self.engine.to_host(out.reward, out.cont)).astype(np.float32, copy=False)
        self._dream_step(d_act)
        model_ms = (time.perf_counter() - t1) * 1e3
        preds, off = [], 0
        for p, a in zip(payloads, planned):
            n = p.slots.size
            preds.append(Predictions(values=both[:, off:off + n], actions=None if a is None else a[p.plan]).to_bytes())
            off += n
        self.tick = ctrl.tick
        dream = self.d_ids.size > 0
        return EngineResult(
            index=self.index, tick=ctrl.tick, preds=preds, dream_ids=self.d_ids if dream else None,
            dream_reward=self.d_reward if dream else None, dream_cont=self.d_cont if dream else None,
            model_ms=model_ms, engine_ms=(time.perf_counter() - t0) * 1e3,
            snapshot=self.snapshot() if ctrl.snapshot else None, t_in=t0, t_out=time.perf_counter())

    def _dream_actions(self, ctrl: EngineControl) -> np.ndarray:
        """The dream agents' actions: their agent's, or the planner's from their own states."""
        if self.dream_plans:
            a = self.planner.plan(self.d_slots, self.d_obs, self.d_fresh, self.d_slots, ctrl.tick,
                                  standing=~self.d_fresh)
        else:
            info = AgentInfo(ids=self.d_ids, tick=ctrl.tick, first=self.d_fresh, pred_reward=self.d_reward,
                             pred_cont=self.d_cont)
            a = self.agent.act(self.d_obs, info)
        return apply_overrides(np.asarray(a), self.d_ids, ctrl.ids, ctrl.actions)

    def _plan_real(self, payloads: list[EnvPayload], tick: int) -> list[np.ndarray | None]:
        """Per payload: its actions with the planner's in the `plan` rows, or None where no row
        plans. All planning rows of all payloads are searched together."""
        rows = [None if p.plan is None or not p.plan.any() else np.flatnonzero(p.plan) for p in payloads]
        if all(r is None for r in rows):
            return [None] * len(payloads)
        if self.planner is None:
            raise TickRejected(f"EngineWorker {self.index}: a payload asks for planned actions, and this "
                               "engine has no planner")
        pick = [(p, r) for p, r in zip(payloads, rows) if r is not None]
        slots = np.concatenate([p.slots[r] for p, r in pick])
        acts = self.planner.plan(slots, np.concatenate([p.obs[r] for p, r in pick]),
                                 np.concatenate([p.resets[r] for p, r in pick]), slots, tick)
        out, at = [], 0
        for p, r in zip(payloads, rows):
            if r is None:
                out.append(None)
                continue
            a = p.actions.copy()
            a[r] = acts[at:at + r.size]
            at += r.size
            out.append(a)
        return out

    def _dream_step(self, d_act: np.ndarray | None) -> None:
        """Dream agents that just joined observe their start observation; the others imagine."""
        fresh = self.d_fresh
        for rows, observe in ((np.flatnonzero(fresh), True), (np.flatnonzero(~fresh), False)):
            if rows.size == 0:
                continue
            if rows.size == fresh.size:  # every row: a slice, so the writes below copy, not scatter
                rows = slice(None)
            slots = self.d_slots[rows]
            if observe:
                o = self.engine.observe(slots, self.d_obs[rows], d_act[rows], np.ones(slots.size, bool),
                                        decode=self.decode, latents=False)
            else:
                o = self.engine.imagine(slots, d_act[rows], decode=self.decode, latents=False)
            host = self.engine.to_host(o.reward, o.cont, *((o.obs,) if self.decode else ()))
            self.d_reward[rows], self.d_cont[rows] = host[0], host[1]
            if self.decode:
                self.d_obs[rows] = host[2]
        self.d_fresh = np.zeros(self.d_ids.size, bool)

    # ----- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> EngineSnapshot:
        """Everything needed to rebuild this worker at the current tick."""
        return EngineSnapshot(tick=self.tick, slab=EngineSnapshot.pieces(self.engine.snapshot()), rng=self.engine.rng_state(),
                              dream_ids=self.d_ids, dream_slots=self.d_slots, dream_obs=self.d_obs,
                              dream_fresh=self.d_fresh, dream_reward=self.d_reward, dream_cont=self.d_cont)

    def restore(self, snap: EngineSnapshot) -> int:
        """Load a snapshot into a fresh worker; returns the snapshot's tick."""
        owned = self.engine.slab.owned_slots()
        if owned.size:
            self.engine.leave(owned)
        self.engine.restore(snap.slab_bytes, "same")
        self.engine.set_rng_state(snap.rng)
        self.d_ids, self.d_slots = snap.dream_ids, snap.dream_slots
        self.d_obs, self.d_fresh = snap.dream_obs.astype(np.float32, copy=False), snap.dream_fresh
        self.d_reward, self.d_cont = snap.dream_reward, snap.dream_cont
        self.tick = snap.tick
        return self.tick
