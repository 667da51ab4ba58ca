"""How a tick's graph runs: in this process, as plain Ray actor calls, or as a Ray Compiled Graph.

Ray itself is imported only by `actors.py` and `ray_start.py`; the executors drive the handles
and the `ray` module they are given.

Each executor is built from frozen facts (the `Topology`, the actor handles, a few knobs) and
never sees the Simulation. `run(env_ctrl, eng_ctrl)` hands the actors their control messages
(bytes) and returns (EngineResult bytes per EngineActor, EnvReport bytes per EnvActor).
`graph` says how the graph was built, which the timing maths needs to find the tick's longest
chain of work (`timing.py`).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from worldssm.errors import TickRejected
from worldssm.sim.shells import pin_thread
from worldssm.sim.topology import Topology

log = logging.getLogger(__name__)

# The longest a Compiled Graph's teardown may take before the actors whose graph loop is still
# running are killed (see `CompiledExecutor.teardown`); never more than the tick's timeout.
TEARDOWN_S = 30.0


@dataclass(frozen=True)
class GraphFacts:
    """How an executor orders the work of a tick.

    env_step_first: per EnvActor, whether its payload leaves only after its env step.
    step_waits_for: per EnvActor, the other EnvActors whose act its env step waits for.
    step_after_engine: every env step waits for its EngineActor's tick (planning agents' actions
        come from the engine; then env_step_first is all False).
    """

    env_step_first: tuple
    step_waits_for: tuple
    step_after_engine: bool = False

    @classmethod
    def uniform(cls, n_env: int, env_step_first: bool) -> GraphFacts:
        return cls((env_step_first,) * n_env, ((),) * n_env)

    @classmethod
    def planned(cls, n_env: int) -> GraphFacts:
        return cls((False,) * n_env, ((),) * n_env, True)


class LocalExecutor:
    """The same shells in this process, one after another (each EnvActor acts and steps, then
    each EngineActor ticks; with planning agents each EnvActor acts, the EngineActors tick, then
    the envs step)."""

    def __init__(self, topo: Topology, env_actors: list, engine_actors: list):
        self.topo, self.env_actors, self.engine_actors = topo, env_actors, engine_actors
        self.graph = GraphFacts.planned(topo.n_env) if topo.plans else GraphFacts.uniform(topo.n_env, True)

    def run(self, env_ctrl, eng_ctrl):
        if self.topo.plans:
            pays = [a.act(c) for a, c in zip(self.env_actors, env_ctrl)]
            outs = [a.tick(c, *[pays[e] for e in self.topo.envs_of[j]])
                    for j, (a, c) in enumerate(zip(self.engine_actors, eng_ctrl))]
            return outs, [a.step_after_engine(outs[self.topo.engine_of(e)]) for e, a in enumerate(self.env_actors)]
        steps = [a.act_and_step(c) for a, c in zip(self.env_actors, env_ctrl)]
        outs = [a.tick(c, *[steps[e][0] for e in self.topo.envs_of[j]])
                for j, (a, c) in enumerate(zip(self.engine_actors, eng_ctrl))]
        return outs, [r for _, r in steps]

    def teardown(self) -> list:
        return []


class PlainExecutor:
    """Ordinary actor calls; env results flow to the engines as object refs, one wait per tick.

    Each EnvActor gets one call per tick (`act_and_step`: act, then its env step, returning the
    engine's payload and its report) rather than separate act and env-step calls: a plain call
    costs more than the overlap would save (measured at 16 agents on 2 cores: 2.35 ms per tick
    against 2.71 ms with the split)."""

    def __init__(self, topo: Topology, env_actors: list, engine_actors: list, ray, timeout_s: float):
        self.topo, self.env_actors, self.engine_actors = topo, env_actors, engine_actors
        self.ray, self.timeout_s = ray, timeout_s
        self.graph = GraphFacts.planned(topo.n_env) if topo.plans else GraphFacts.uniform(topo.n_env, True)

    def run(self, env_ctrl, eng_ctrl):
        if self.topo.plans:  # act -> engine (plans) -> env step, chained by object refs
            pays = [a.act.remote(c) for a, c in zip(self.env_actors, env_ctrl)]
            outs = [a.tick.remote(c, *[pays[e] for e in self.topo.envs_of[j]])
                    for j, (a, c) in enumerate(zip(self.engine_actors, eng_ctrl))]
            reps = [a.step_after_engine.remote(outs[self.topo.engine_of(e)]) for e, a in enumerate(self.env_actors)]
            got = self.ray.get(outs + reps, timeout=self.timeout_s)
            return got[:len(outs)], got[len(outs):]
        steps = [a.act_and_step.options(num_returns=2).remote(c) for a, c in zip(self.env_actors, env_ctrl)]
        outs = [a.tick.remote(c, *[steps[e][0] for e in self.topo.envs_of[j]])
                for j, (a, c) in enumerate(zip(self.engine_actors, eng_ctrl))]
        got = self.ray.get(outs + [r for _, r in steps], timeout=self.timeout_s)
        return got[:len(outs)], got[len(outs):]

    def teardown(self) -> list:
        return []


class CompiledExecutor:
    """The same graph as a Ray Compiled Graph: compiled once, replayed every tick.

    CPU pinning (`pin_cpus`, Linux, single-node Ray): every reader of a Compiled Graph
    busy-waits (Ray's `PlasmaObjectHeader::ReadAcquire` polls with `sched_yield`), so all the
    graph's processes look runnable all the time and the kernel has no reason to move them apart:
    with 2 EnvActors, 1 EngineActor and the driver on 2 cores, the two EnvActors often share a core
    and step one after the other (measured: the driver -> last EnvActor hop went from about 0.1 ms
    to 0.5-0.8 ms in some runs, bimodal from run to run). So each actor's graph thread pins itself
    to a core (see `layout`), and the driver's thread while it waits for the tick; only those
    threads move, and the driver's is restored after. A waiting reader yields its core only when
    it is the one running, so a process that has work can wait a whole time slice behind another
    one that has work too. So the graph fixes the order of the work on a shared core:

    - An EnvActor on an EngineActor's core acts and steps its envs in one task (`act_and_step`)
      before the engine observes. The core does both anyway; this way the engine's result goes
      straight to the driver, one Ray hop fewer on the tick's longest chain than stepping the
      envs after the engine (measured at 16 agents on 2 cores: 1.13-1.21 ms per tick against
      1.16-1.21 ms, and the hop gone from the overhead).
    - Elsewhere an EnvActor acts (`act`), its payload goes to the engine, and it steps its envs
      (`step_envs`) while the engine observes, once every EnvActor on its core has acted (the
      engine needs all the actions; the env step is needed only by the driver). Measured at 16
      agents on 2 cores with both env steps free to run right after their act: 1.8 ms per tick;
      ordered, 1.1-1.2 ms.
    """

    def __init__(self, topo: Topology, env_actors: list, engine_actors: list, ray, timeout_s: float,
                 pin_cpus: bool):
        from worldssm.sim.actors import InputNode, MultiOutputNode

        self.ray, self.timeout_s = ray, timeout_s
        self.teardown_s = min(float(timeout_s), TEARDOWN_S)
        self.cdag = None
        n_env, self.n_eng = topo.n_env, topo.n_engine
        self.cpus = layout(topo, ray) if pin_cpus else []
        env_cpus = self.cpus[:n_env] if self.cpus else [None] * n_env
        eng_cpus = set(self.cpus[n_env:n_env + self.n_eng]) if self.cpus else set()
        # With planning agents every env step waits for its engine (act -> tick -> step).
        first = [c is not None and c in eng_cpus and not topo.plans for c in env_cpus]
        with InputNode() as inp:
            payloads, reports = [], []
            for e, a in enumerate(env_actors):
                if first[e]:
                    pay, rep = a.act_and_step.options(num_returns=2).bind(inp[e])
                else:
                    pay, rep = a.act.bind(inp[e]), None
                payloads.append(pay)
                reports.append(rep)
            eng_nodes = [a.tick.bind(inp[n_env + j], *[payloads[e] for e in topo.envs_of[j]])
                         for j, a in enumerate(engine_actors)]
            # The other env steps wait for the acts of the EnvActors on their core.
            waits = []
            for e, a in enumerate(env_actors):
                c = env_cpus[e]
                others = () if first[e] or c is None else \
                    tuple(o for o in range(n_env) if o != e and env_cpus[o] == c)
                waits.append(others)
                if topo.plans:
                    reports[e] = a.step_after_engine.bind(eng_nodes[topo.engine_of(e)])
                elif reports[e] is None:
                    reports[e] = a.step_envs.bind(payloads[e], *[payloads[o] for o in others])
            dag = MultiOutputNode(eng_nodes + reports)
        self.graph = GraphFacts.planned(n_env) if topo.plans else GraphFacts(tuple(first), tuple(waits))
        actors = env_actors + engine_actors
        ray.get([a.pin_graph_thread.remote(c) for a, c in zip(actors, self.cpus)], timeout=timeout_s)
        self.driver_cpu = self.cpus[-1] if self.cpus else None
        self.cdag = dag.experimental_compile(_submit_timeout=timeout_s)

    def run(self, env_ctrl, eng_ctrl):
        mask = None
        if self.driver_cpu is not None:
            mask = os.sched_getaffinity(0)
            pin_thread(self.driver_cpu)
        try:
            refs = self.cdag.execute(*env_ctrl, *eng_ctrl)
            got = self.ray.get(refs, timeout=self.timeout_s)
        finally:
            if mask is not None:
                os.sched_setaffinity(0, mask)
        return got[:self.n_eng], got[self.n_eng:]

    def teardown(self) -> list:
        """Tear the graph down in bounded time; returns the actors it had to kill (usually none).

        Ray's teardown (Ray 2.60, `compiled_dag_node.py`) waits for every actor's graph loop to
        exit: up to 30 s per actor for its cancel task, then `RAY_CGRAPH_teardown_timeout` (30 s)
        per loop, then, unless `kill_actors=True`, a `ray.get` on the loop with no timeout; it also
        waits, unbounded, for the graph's monitor thread when that one started the teardown after
        an actor died. A surviving actor whose loop never sees its channels close would hold the
        caller there for good. So the teardown runs in a helper thread and the caller waits at
        most `teardown_s`; then the actors whose loop is still running are killed (their loop
        task fails, which ends Ray's wait), and the Simulation restarts them like any dead actor
        (an EngineActor from its last snapshot). `kill_actors=True` is not used: it kills every
        actor of the graph, always."""
        cdag, self.cdag = self.cdag, None
        if cdag is None:
            return []
        done = threading.Event()

        def run():
            try:
                cdag.teardown()
            except Exception:  # noqa: BLE001 - a graph broken by a dead actor may refuse teardown
                pass
            finally:
                done.set()

        threading.Thread(target=run, name="worldssm-graph-teardown", daemon=True).start()
        if done.wait(self.teardown_s):
            return []
        loops = dict(getattr(cdag, "worker_task_refs", None) or {})
        stuck = [a for a, ref in loops.items() if not self.ray.wait([ref], timeout=0)[0]]
        log.warning("Compiled Graph teardown still running after %g s; killing %d actor(s) whose "
                    "graph loop has not exited", self.teardown_s, len(stuck))
        for a in stuck:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001 - already dead
                pass
        done.wait(self.teardown_s)  # returns once Ray sees the killed loops fail; bounded anyway
        return stuck


def layout(topo: Topology, ray) -> list:
    """Cores for [EnvActors..., EngineActors..., driver]; [] when not pinning (not Linux, or Ray
    has more than one node). EngineActors take the first of this process's allowed cores and
    EnvActors the next ones, round robin over all of them; the driver takes a spare core, else the
    last one. On 2 cores with 1 EngineActor and 2 EnvActors: engine and EnvActor 1 on core 0
    (EnvActor 1 acts and steps its envs before the engine observes), EnvActor 0 and the driver on
    core 1. (Measured there, with EnvActor 1's env step after the engine: 1.11-1.20 ms per tick;
    both EnvActors on core 1 with the engine and the driver on core 0, 1.18-1.26 ms; the same with
    the driver on core 1, 1.41-1.54 ms.)"""
    if not hasattr(os, "sched_getaffinity"):
        return []
    if sum(1 for n in ray.nodes() if n.get("Alive")) != 1:
        return []
    cores = sorted(os.sched_getaffinity(0))
    n_env, n_eng = topo.n_env, topo.n_engine
    eng = [cores[j % len(cores)] for j in range(n_eng)]
    env = [cores[(n_eng + e) % len(cores)] for e in range(n_env)]
    spare = cores[n_eng + n_env:]
    return env + eng + [spare[0] if spare else cores[-1]]


# Ray's errors that mean an actor or its channel is gone (the tick can be recovered).
_FAULTS = ("RayActorError", "ActorDiedError", "RayChannelError", "RayChannelTimeoutError",
           "GetTimeoutError", "ActorUnavailableError")


def is_fault(ray, exc: BaseException) -> bool:
    """Whether a failed `run` means a dead actor (restart and restore) rather than a bug: one of
    Ray's fault errors, or an error whose `cause` (Ray's wrapped remote error) or `__cause__` is
    one. A Compiled Graph read that meets a closed channel and then times out (10 s) waiting
    for the graph loops' own errors raises a plain Exception from a GetTimeoutError (Ray 2.60,
    `CompiledDAGRef.get`): a fault too, where the error alone would end the simulation."""
    kinds = tuple(k for k in (getattr(ray.exceptions, n, None) for n in _FAULTS) if k is not None)
    return any(isinstance(e, kinds) for e in (exc, getattr(exc, "cause", None), exc.__cause__))


def rejection_reason(exc: BaseException) -> str | None:
    """The reason of a TickRejected raised inside an actor (Ray wraps it with the remote
    traceback; the reason alone is what the caller needs), or None for any other error."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, TickRejected):
        return str(cause)
    if isinstance(exc, TickRejected) and cause is None:
        return str(exc)
    return None
