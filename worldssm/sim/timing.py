"""Where a tick's time went (`TickResult`, read off the actors' reports) and a run's summary."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from worldssm.sim.config import SimConfig
from worldssm.sim.executors import GraphFacts
from worldssm.sim.messages import EngineResult, EnvReport
from worldssm.sim.roster import Roster
from worldssm.sim.topology import Topology


@dataclass
class TickResult:
    """One tick as the driver saw it."""

    tick: int
    latency_ms: float  # driver wall time of the round trip (plus bookkeeping)
    env_ms: float  # slowest EnvActor's own work this tick (act + env step)
    engine_ms: float  # slowest EngineActor's own work this tick
    model_ms: float  # slowest EngineActor's model calls
    agents: int  # live agents after the tick
    recovered: bool = False  # the tick failed and actors were restarted
    driver_ms: float = 0.0  # the driver's own work: validating, packing controls, reading results
    # Wall time of each hop of the graph (same-host clocks; meaningless across nodes): driver ->
    # last EnvActor starting to act, last EnvActor's payload out -> EngineActor starting,
    # EngineActor done -> driver holding the result (each includes Ray's serialisation, copies
    # and wake-up).
    hop_ms: tuple = (0.0, 0.0, 0.0)
    act_ms: float = 0.0  # slowest EnvActor's act (agents, packing the engine's payload)
    # The actors' work on the tick's longest chain through the graph as built (see `work_chain`);
    # latency - work_ms is what the tick spent on anything but the actors' own work: Ray's
    # transport, the driver, and waiting for a core.
    work_ms: float = 0.0


def work_chain(topo: Topology, graph: GraphFacts, reports: list[EnvReport], results: list[EngineResult]) -> float:
    """The actors' work (ms) on the tick's longest chain: EnvActors act (and step their envs
    first, where the graph says so), then each EngineActor ticks after the payloads feeding it;
    every other env step follows its act and the acts the graph made it wait for."""
    done = []
    for j, res in enumerate(results):
        before = [reports[e].act_ms + (reports[e].step_ms if graph.env_step_first[e] else 0.0)
                  for e in topo.envs_of[j]]
        done.append(max(before, default=0.0) + res.engine_ms)
    work = max(done, default=0.0)
    if graph.step_after_engine:  # every env step follows its engine's tick
        for e, rep in enumerate(reports):
            work = max(work, done[topo.engine_of(e)] + rep.step_ms)
        return work
    for e, rep in enumerate(reports):
        start = max([rep.act_ms] + [reports[o].act_ms for o in graph.step_waits_for[e]])
        work = max(work, start + rep.step_ms)
    return work


def hops(topo: Topology, graph: GraphFacts, reports: list[EnvReport], results: list[EngineResult],
         t_sent: float, t_back: float) -> tuple[float, float, float]:
    """The three hops of `TickResult.hop_ms`, each the slowest of its kind (ms)."""
    first = max(((r.t_act - t_sent) * 1e3 for r in reports), default=0.0)
    sent = [r.t_out if graph.env_step_first[e] else r.t_acted for e, r in enumerate(reports)]
    second = third = 0.0
    for j, res in enumerate(results):
        mine = topo.envs_of[j]
        if mine:
            second = max(second, (res.t_in - max(sent[e] for e in mine)) * 1e3)
        third = max(third, (t_back - res.t_out) * 1e3)
    return first, second, third


def summarize(cfg: SimConfig, history, totals: dict, roster: Roster, ticks: int, recoveries: int,
              engine_impl: str) -> dict:
    """A run's summary in plain JSON types: tick latency percentiles (over the ticks kept in
    `history`), rates (over every tick, `totals`), faults, which engine step ran, every live
    agent's record and the most recent departures (`Roster.departed`), and totals that count
    every agent ever seen."""
    ok = [r for r in history if not r.recovered]
    lat = np.array([r.latency_ms for r in ok]) if ok else np.zeros(1)
    live = set(roster.live().tolist())
    seconds = totals["seconds"]
    config = cfg.to_dict()
    config["model"] = {k: v for k, v in (config["model"] or {}).items() if k in ("checkpoint", "preset", "seed")}

    def p50(key: str) -> float:
        return float(np.median([getattr(r, key) for r in ok])) if ok else 0.0

    agents = {str(g): dataclasses.asdict(r) for g, r in roster.departed}
    by_agent: dict[str, list[float]] = {}
    for _, r in roster.departed:
        if r.episode_return is not None and r.agent is not None:
            by_agent.setdefault(r.agent, []).append(r.episode_return)
    agents.update({str(g): dataclasses.asdict(r) for g, r in roster.records.items()})
    return {
        "config": config, "model": config["model"], "ticks": ticks, "recoveries": recoveries,
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                       "mean": float(lat.mean()), "over_ticks": len(ok)},
        "env_ms_p50": p50("env_ms"), "engine_ms_p50": p50("engine_ms"), "model_ms_p50": p50("model_ms"),
        "ticks_per_s": totals["ticks"] / seconds if seconds > 0 else 0.0,
        "agent_steps_per_s": totals["agent_steps"] / seconds if seconds > 0 else 0.0,
        "engine": engine_impl,
        "agents_live": len(live), "agents_seen": roster.seen,
        "agents_left": dict(roster.left_by_reason),
        "agents_missing": [g for g, r in roster.records.items() if r.left is None and g not in live],
        "ticks_lost_total": int(roster.departed_ticks_lost + sum(r.ticks_lost for r in roster.records.values())),
        "returns_by_agent": {name: {"episodes": len(v), "mean_return": float(np.mean(v))}
                             for name, v in sorted(by_agent.items())},
        "agents": agents,
    }
