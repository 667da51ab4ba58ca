"""The Simulation: setup, the tick loop, recovery and the summary, over EnvActors and EngineActors.

Layout (`topology.Topology`): EnvActors hold batched envs and their agents; EngineActor j holds
the states of the agents of the EnvActors feeding it and of its dream agents. One tick is one
Ray round trip on the critical path: the driver hands each actor its control message; each
EnvActor's agents act and their (o_t, a_t) go straight to its EngineActor, which observes them
while the EnvActor steps its envs; the driver waits once for the EngineActors' results and the
EnvActors' reports. `executor="compiled"` runs that graph as a Ray Compiled Graph,
`executor="plain"` as ordinary actor calls, `backend="local"` runs the same shells in this
process without Ray (`executors.py`).

Faults: every `snapshot_every` ticks the EngineActors return a snapshot. When an actor dies the
tick fails; the Simulation tears the graph down, restarts dead actors (an EngineActor restored
from its last snapshot plus the membership changes logged since, `roster.Roster`; an EnvActor
with re-seeded envs whose agents keep their ids and are marked reset), rebuilds the graph and
goes on. The summary reports ticks lost per agent.

Security: `ray_start.start_ray` binds a local Ray to 127.0.0.1 with token authentication and no
dashboard; every message is msgpack bytes (`messages.py`), never pickle.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque

import numpy as np

from worldssm import codec
from worldssm.agents.planners import PLANNER_PRESETS
from worldssm.agents.registry import PLANNER, check_import_path, is_import_path
from worldssm.errors import TickRejected, WorldssmError
from worldssm.sim.config import SimConfig
from worldssm.sim.executors import CompiledExecutor, LocalExecutor, PlainExecutor, is_fault, rejection_reason
from worldssm.sim.ids import DREAM_OWNER, owner_of
from worldssm.sim.messages import (
    ActorSpaces,
    AgentKind,
    EngineActorSetup,
    EngineControl,
    EngineResult,
    EngineSnapshot,
    EnvActorSetup,
    EnvControl,
    EnvReport,
    MembershipLog,
)
from worldssm.sim.overrides import check_overrides, split_overrides
from worldssm.sim.roster import Roster
from worldssm.sim.shells import EngineShell, EnvShell
from worldssm.sim.timing import TickResult, hops, summarize, work_chain
from worldssm.sim.topology import Topology, assign_kinds
from worldssm.spaces import first_nonfinite_row, require_same_spaces

class Simulation:
    """Run agents in real envs, in the model's dream, or both, over Ray actors (or locally).

    Args:
        cfg: the SimConfig; `cfg.model` names the world model.
        address: an existing Ray cluster; None starts (or reuses) a local one via `start_ray`.
    """

    def __init__(self, cfg: SimConfig, address: str | None = None):
        if cfg.model is None:
            raise ValueError("SimConfig.model is required: ModelSource.of_checkpoint(run) or .of_preset(...)")
        self.cfg, self.topo = cfg, Topology.build(cfg)
        for name, _ in cfg.mix + ((cfg.dream_agent_name or "", 1),):
            if is_import_path(name):  # a path that does not resolve is named here, before any actor starts
                check_import_path(name, cfg.agent_kwargs.get(name))
        self._check_env_and_agents()
        if cfg.backend == "ray":
            from worldssm.sim.ray_start import start_ray

            self.ray = start_ray(address)
        else:
            self.ray = None
        self.t = 0
        self.roster = Roster(self.topo)
        self.roster.agent_names = tuple(name for name, _ in cfg.mix)
        self.roster.dream_agent = cfg.dream_agent_name if cfg.n_dream else None
        # The last `keep_ticks` ticks (latency percentiles); totals count every tick.
        self.history: deque[TickResult] = deque(maxlen=cfg.keep_ticks)
        self.totals = {"ticks": 0, "seconds": 0.0, "agent_steps": 0}
        self.recoveries = 0
        self.env_actors: list = []
        self.engine_actors: list = []
        self._preds: list[bytes | None] = [None] * self.topo.n_env  # Predictions bytes per EnvActor
        self._exec = None
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # ----- setup --------------------------------------------------------------------------------
    def _check_env_and_agents(self) -> None:
        """Build the env once here, and each built-in kind of real agent in it, so that an env
        name or argument the env does not take (EnvError), or an agent that cannot act in this env
        (AgentError), is named before any actor starts; inside an actor it would surface as the
        actor's failure."""
        from worldssm.agents import make_agent
        from worldssm.envs import kind_of, make
        from worldssm.spaces import space_to_dict

        cfg = self.cfg
        if self.topo.n_env == 0:
            return
        # One agent is enough to check names and arguments (a PettingZoo env fixes its own).
        env = make(cfg.env, api="batched", n_agents=None if kind_of(cfg.env) == "pettingzoo" else 1,
                   **cfg.env_kwargs)
        try:
            space = space_to_dict(env.single_action_space)
            for name, _ in cfg.mix:
                if name != PLANNER and not is_import_path(name):
                    make_agent(name, space, env=env, seed=0)
        finally:
            env.close()

    def _setup(self) -> None:
        cfg, topo = self.cfg, self.topo
        device = "cuda" if self._use_gpu() else "cpu"
        self._engine_setups = [EngineActorSetup(
            index=j, model=cfg.model, capacity=topo.capacity(j), device=device, sample=cfg.sample,
            seed=cfg.seed + j, decode=cfg.decode_dream, agent=cfg.dream_agent_name,
            agent_kwargs=dict(cfg.agent_kwargs.get(cfg.dream_agent_name or "", {})), planner=self._planner_fields(),
            torch_threads=cfg.torch_threads, impl=cfg.engine_impl,
            state_dtype=cfg.engine_state_dtype) for j in range(topo.n_engine)]
        self.engine_actors = [self._new_engine(j) for j in range(topo.n_engine)]
        spaces = ActorSpaces.from_bytes(self._call(self.engine_actors[0], "spaces"))
        self.engine_impl = f"{spaces.impl} on {spaces.device}"  # e.g. "numpy on cpu"
        self.obs_space, self.action_space = spaces.obs, spaces.action
        self._env_setups = []
        rows = [cfg.envs_per_actor * topo.agents_per_env[e] for e in range(topo.n_env)]
        layout = assign_kinds([k for _, k in cfg.mix], sum(rows))  # SimConfig.agents' counts, split
        starts = np.cumsum([0, *rows])
        for e in range(topo.n_env):
            slots = codec.unpackb(self._call(self.engine_actors[topo.engine_of(e)], "reserve", topo.pool))
            self._env_setups.append(EnvActorSetup(
                index=e, env=cfg.env, env_kwargs=dict(cfg.env_kwargs), n_envs=cfg.envs_per_actor,
                agents_per_env=topo.agents_per_env[e], row=topo.row_of(e), seed=cfg.seed * 101 + e, slots=slots,
                kinds=[AgentKind(name=n, share=k, kwargs=dict(cfg.agent_kwargs.get(n, {}))) for n, k in cfg.mix],
                layout=layout[starts[e]:starts[e + 1]]))
        self.env_actors = [self._new_env(s) for s in self._env_setups]
        for e, a in enumerate(self.env_actors):
            env_spaces = ActorSpaces.from_bytes(self._call(a, "spaces"))
            require_same_spaces(cfg.env, env_spaces.obs, env_spaces.action, self)
            live = codec.unpackb(self._call(a, "live_ids"))
            self.roster.live_env[e] = live
            self.roster.add_real(live, 0)
        if cfg.n_dream:
            self.add_agents(cfg.n_dream)
        for j, a in enumerate(self.engine_actors):
            self.roster.snapshot_taken(j, EngineSnapshot.from_bytes(self._call(a, "snapshot")))
        self._exec = self._make_executor()

    def _planner_fields(self) -> dict | None:
        """PlannerConfig fields for the EngineActors when any agent plans (real or dream)."""
        cfg = self.cfg
        if not (cfg.plans or cfg.dream_agent_name == PLANNER):
            return None
        return dataclasses.asdict(PLANNER_PRESETS[cfg.planner])

    def _use_gpu(self) -> bool:
        if self.cfg.device == "cpu":
            return False
        if self.cfg.backend == "local":
            import torch

            if self.cfg.device == "cuda" and not torch.cuda.is_available():
                raise WorldssmError("device='cuda' but torch sees no CUDA device here")
            return self.cfg.device == "cuda" or (self.cfg.device == "auto" and torch.cuda.is_available())
        has = self.ray.cluster_resources().get("GPU", 0) >= 1
        if self.cfg.device == "cuda" and not has:
            raise WorldssmError("device='cuda' but the Ray cluster has no GPU")
        return has

    def _new_engine(self, j: int):
        setup = self._engine_setups[j]
        if self.cfg.backend == "local":
            return EngineShell(setup.to_bytes())
        from worldssm.sim.actors import EngineActor

        gpu = 1 if setup.device == "cuda" else 0
        return EngineActor.options(num_cpus=self.cfg.actor_cpus, num_gpus=gpu).remote(setup.to_bytes())

    def _new_env(self, setup: EnvActorSetup):
        if self.cfg.backend == "local":
            return EnvShell(setup.to_bytes())
        from worldssm.sim.actors import EnvActor

        return EnvActor.options(num_cpus=self.cfg.actor_cpus).remote(setup.to_bytes())

    def _call(self, actor, method: str, *args):
        if self.cfg.backend == "local":
            return getattr(actor, method)(*args)
        return self.ray.get(getattr(actor, method).remote(*args), timeout=self.cfg.timeout_s)

    def _make_executor(self):
        args = (self.topo, self.env_actors, self.engine_actors)
        if self.cfg.backend == "local":
            return LocalExecutor(*args)
        if self.cfg.executor == "compiled":
            return CompiledExecutor(*args, self.ray, self.cfg.timeout_s, self.cfg.pin_cpus)
        return PlainExecutor(*args, self.ray, self.cfg.timeout_s)

    # ----- dream agents joining and leaving between ticks ---------------------------------------
    def add_agents(self, n: int, obs: np.ndarray | None = None, engine: int | None = None) -> np.ndarray:
        """Queue `n` dream agents to join at the next tick; returns their ids.

        Args:
            n: how many.
            obs: start observations [n, *obs_shape]; default: observations of a fresh env reset.
            engine: EngineActor index; default round robin.

        Raises:
            TickRejected: bad observations (shape, NaN or beyond float32), an unknown engine, or
                no room; nothing is queued.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if self.cfg.dream_agent_name is None:
            raise TickRejected(f"dream agents cannot act as {self.cfg.agent!r} (it reads a real env); "
                               "set SimConfig.dream_agent")
        obs = self._start_observations(n) if obs is None else np.asarray(obs)
        shape = (n, *self.obs_space["shape"])
        if obs.shape != shape or obs.dtype.kind not in "biuf":
            raise TickRejected(f"start observations must be numbers of shape {shape}, got {obs.dtype} {obs.shape}")
        bad = first_nonfinite_row(obs)
        if bad is not None:
            raise TickRejected(f"start observation {bad} has NaN or infinite values (in float32)")
        if engine is not None and not 0 <= engine < self.topo.n_engine:
            raise TickRejected(f"engine {engine} is not an EngineActor index (0..{self.topo.n_engine - 1})")
        where = self.roster.spread(n, engine)
        return self.roster.queue_dream_joins(obs.astype(np.float32), where, self.t + 1)

    def remove_agents(self, ids) -> None:
        """Queue dream agents to leave at the next tick (real agents leave when their env says)."""
        self.roster.queue_dream_leaves(np.asarray(ids, np.int64).reshape(-1), self.t + 1)

    def _start_observations(self, n: int) -> np.ndarray:
        from worldssm.envs import kind_of, make

        k = None if kind_of(self.cfg.env) == "pettingzoo" else min(n, 64)
        env = make(self.cfg.env, api="batched", n_agents=k, **self.cfg.env_kwargs)
        try:
            obs, _ = env.reset(seed=self.cfg.seed + 7 + self.roster.seen)
        finally:
            env.close()
        return np.resize(obs, (n, *obs.shape[1:]))

    def live_agents(self) -> np.ndarray:
        """Ids of the agents live after the last tick (queued joins excluded)."""
        return self.roster.live()

    # ----- the tick -----------------------------------------------------------------------------
    def tick(self, actions=None) -> TickResult:
        """Advance every agent by one step.

        Args:
            actions: optional overrides, {agent id: action} or (ids int64 [k], actions [k, ...]);
                the other agents act as their agent decides.

        Raises:
            TickRejected: an unknown agent, or actions of the wrong shape, dtype or value; nothing
                was sent, no env or engine state changed.
        """
        t0 = time.perf_counter()
        t = self.t + 1
        env_ctrl, eng_ctrl = self._controls(t, actions)  # validates before anything is sent
        t_sent = time.perf_counter()
        try:
            outs, raw_reports = self._exec.run(env_ctrl, eng_ctrl)
            t_back = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - sorted below: user error, or a dead actor
            reason = rejection_reason(exc)
            if reason is not None:
                raise TickRejected(reason) from None
            if self.cfg.backend == "local" or not is_fault(self.ray, exc):
                raise
            self.t = t
            self._recover(t, exc)
            res = TickResult(t, (time.perf_counter() - t0) * 1e3, 0.0, 0.0, 0.0,
                             self.roster.count(), recovered=True)
            self.history.append(res)
            return res
        self.t = t
        self.roster.commit(t)
        results = [EngineResult.from_bytes(o) for o in outs]
        reports = [EnvReport.from_bytes(r) for r in raw_reports]
        self.roster.ingest(t, reports, results)
        for j, r in enumerate(results):
            for e, pred in zip(self.topo.envs_of[j], r.preds):
                self._preds[e] = pred
        graph = self._exec.graph
        res = TickResult(
            t, (time.perf_counter() - t0) * 1e3,
            env_ms=max((r.act_ms + r.step_ms for r in reports), default=0.0),
            engine_ms=max((r.engine_ms for r in results), default=0.0),
            model_ms=max((r.model_ms for r in results), default=0.0),
            agents=self.roster.count(), hop_ms=hops(self.topo, graph, reports, results, t_sent, t_back),
            act_ms=max((r.act_ms for r in reports), default=0.0),
            work_ms=work_chain(self.topo, graph, reports, results))
        res.driver_ms = (t_sent - t0) * 1e3 + (time.perf_counter() - t_back) * 1e3
        self.history.append(res)
        self.totals["ticks"] += 1
        self.totals["seconds"] += res.latency_ms / 1e3
        self.totals["agent_steps"] += res.agents
        return res

    def _controls(self, t: int, actions) -> tuple[list[bytes], list[bytes]]:
        """Each actor's control message for tick `t`, after checking the overrides."""
        given = self._overrides(actions)  # owner -> {"ids", "actions"}; validated here
        env_ctrl = [EnvControl(tick=t, pred=self._preds[e], **given.get(e, {})).to_bytes()
                    for e in range(self.topo.n_env)]
        eng_ctrl = []
        for j in range(self.topo.n_engine):
            joins, leave = self.roster.queued(j)
            eng_ctrl.append(EngineControl(tick=t, snapshot=t % self.cfg.snapshot_every == 0, joins=list(joins),
                                          leave=leave if leave.size else None,
                                          **given.get(DREAM_OWNER + j, {})).to_bytes())
        return env_ctrl, eng_ctrl

    def _overrides(self, actions) -> dict[int, dict]:
        """The caller's overrides split by the actor that owns each agent, checked against that
        actor's live agents and the action space."""
        if actions is None:
            return {}
        ids, acts = split_overrides(actions, self.action_space)
        owners = owner_of(ids)
        out = {}
        for o in np.unique(owners).tolist():
            rows = owners == o
            if 0 <= o < self.topo.n_env:
                live, where = self.roster.live_env[o], f"EnvActor {o}"
            elif 0 <= o - DREAM_OWNER < self.topo.n_engine:
                live, where = self.roster.dream_live_after_queue(o - DREAM_OWNER), f"EngineActor {o - DREAM_OWNER}"
            else:
                raise TickRejected(f"agent {int(ids[np.argmax(rows)])} is not a live agent")
            check_overrides(ids[rows], acts[rows], live, self.action_space, where)
            out[o] = {"ids": ids[rows], "actions": acts[rows]}
        return out

    # ----- faults -------------------------------------------------------------------------------
    def _alive(self, actors: list) -> list[int | None]:
        """Each actor's last processed tick, or None where it is dead or does not answer within
        `timeout_s` (all asked at once: one deadline for all). One that does not answer is killed
        here, so that it cannot run on beside its replacement (a Compiled Graph loop still polling
        its channels keeps a core busy)."""
        refs = []
        for a in actors:
            try:
                refs.append(a.ping.remote())
            except Exception:  # noqa: BLE001 - a handle that cannot take a call is dead
                refs.append(None)
        live = [r for r in refs if r is not None]
        if live:
            self.ray.wait(live, num_returns=len(live), timeout=self.cfg.timeout_s)
        out = []
        for a, r in zip(actors, refs):
            try:
                out.append(None if r is None else int(self.ray.get(r, timeout=0)))
            except Exception:  # noqa: BLE001 - any failure to answer means we replace it
                out.append(None)
                try:
                    self.ray.kill(a)
                except Exception:  # noqa: BLE001 - already dead
                    pass
        return out

    def _recover(self, t: int, exc: BaseException) -> None:
        """Tick `t` failed: restart dead actors, restore, rebuild the graph, account ticks lost."""
        self.recoveries += 1
        if self.recoveries > self.cfg.max_recoveries:
            raise WorldssmError(f"giving up after {self.cfg.max_recoveries} recoveries; last fault: {exc}") from exc
        # Bounded: an actor whose graph loop does not stop is killed there and restarted below.
        self._exec.teardown()
        alive = self._alive(self.engine_actors + self.env_actors)
        last, env_alive = alive[:self.topo.n_engine], [d is not None for d in alive[self.topo.n_engine:]]
        for j, done in enumerate(last):
            if done is not None:
                continue
            self.engine_actors[j] = self._new_engine(j)
            snap, ops = self.roster.replay_plan(j)
            last[j] = self._call(self.engine_actors[j], "restore", snap.to_bytes())
            self._call(self.engine_actors[j], "replay", MembershipLog(ops=ops).to_bytes())
            for e in self.topo.envs_of[j]:
                if env_alive[e]:
                    self._call(self.env_actors[e], "engine_restored", snap.tick)
        for j, done in enumerate(last):
            self.roster.engine_resumed(j, done, t)
        for e, ok in enumerate(env_alive):
            # A surviving EnvActor may have stepped its envs in tick t (they do not wait for
            # the engine): agents left and joined there, and its report went down with the tick.
            raw = self._call(self.env_actors[e], "last_report") if ok else None
            if raw is not None and (rep := EnvReport.from_bytes(raw)).tick == t:
                self.roster.ingest_report(e, rep, t)
        for e, ok in enumerate(env_alive):
            if ok:
                continue
            setup = dataclasses.replace(self._env_setups[e], reuse_ids=self.roster.live_env[e],
                                        first_number=self.roster.next_number(e))
            self.env_actors[e] = self._new_env(setup)
            self.roster.env_restarted(e, codec.unpackb(self._call(self.env_actors[e], "live_ids")), t)
        # No tick result reports who is live after a recovery: ask the engines. A restored one
        # replayed joins and leaves since its snapshot, a surviving one may have run tick t.
        for j, actor in enumerate(self.engine_actors):
            self.roster.live_dream[j] = codec.unpackb(self._call(actor, "dream_ids"))
        self._preds = [None] * self.topo.n_env
        self._exec = self._make_executor()

    # ----- runs and summaries -------------------------------------------------------------------
    def run(self, ticks: int, on_tick=None) -> dict:
        """Run `ticks` ticks (calling `on_tick(result)` after each) and return `summary()`."""
        for _ in range(ticks):
            res = self.tick()
            if on_tick is not None:
                on_tick(res)
        return self.summary()

    def summary(self) -> dict:
        """Tick latency percentiles, rates, faults, and every agent's fate (plain JSON types)."""
        return summarize(self.cfg, self.history, self.totals, self.roster, self.t, self.recoveries, self.engine_impl)

    def close(self) -> None:
        """Tear the graph down and stop the actors (Ray itself stays up)."""
        if self._exec is not None:
            self._exec.teardown()
            self._exec = None
        if self.cfg.backend == "ray" and self.ray is not None:
            for a in self.env_actors + self.engine_actors:
                try:
                    self.ray.kill(a)
                except Exception:  # noqa: BLE001 - already dead
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

