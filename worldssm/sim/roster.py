"""Who is in the Simulation: live agents per actor, queued dream joins and leaves, the log of
membership changes since each EngineActor's last snapshot, and the agents' records.

Memory stays bounded however long a run lasts: the records of live (and queued) agents are
kept; an agent that left moves to a bounded list of the most recent departures, and totals
(agents seen, departures by reason, ticks lost) keep counting every agent.

The driver owns one `Roster`. Real agents join and leave when their envs say (the EnvActors'
reports); dream agents join and leave when the caller asks (`queue_*`), at the next tick.
Queued changes move to the log only once a tick ran them (`commit`), so a rejected or failed
tick leaves them queued; the log since a snapshot is what a restored EngineActor replays.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from worldssm.errors import TickRejected
from worldssm.sim.ids import DREAM_OWNER, OWNER_SHIFT, agent_id, owner_of
from worldssm.sim.messages import DreamJoin, EngineResult, EngineSnapshot, EnvReport, Membership
from worldssm.sim.topology import Topology

_NO_IDS = np.zeros(0, np.int64)
KEEP_DEPARTED = 10_000  # records of agents that left, kept for the summary (the oldest go first)


@dataclass
class AgentRecord:
    """One agent's life in the Simulation."""

    kind: str  # "real" or "dream"
    joined: int  # tick it joined
    left: int | None = None  # tick it left, None while live
    reason: str | None = None  # why it left
    ticks_lost: int = 0  # ticks whose observation or step its engine state missed
    resets: int = 0  # forced restarts (its EnvActor died)
    episode_return: float | None = None  # env reward summed over its episode, once it left
    agent: str | None = None  # how it acted (a name of SimConfig.agents); a real agent's once it left


class _Queue:
    """Dream joins and leaves queued at one EngineActor for the next tick."""

    def __init__(self):
        self.joins: list[DreamJoin] = []
        self.leaves: list[np.ndarray] = []

    @property
    def empty(self) -> bool:
        return not self.joins and not self.leaves

    @property
    def leave(self) -> np.ndarray:
        return np.concatenate(self.leaves) if self.leaves else _NO_IDS

    def membership(self, tick: int) -> Membership:
        return Membership(tick=tick, joins=list(self.joins), leave=self.leave)


class Roster:
    """Membership of one Simulation (see the module docstring).

    Args:
        topo: the actor layout (how many actors, each EngineActor's room for dream agents).
    """

    def __init__(self, topo: Topology, keep_departed: int = KEEP_DEPARTED):
        self.topo = topo
        self.agent_names: tuple = ()  # SimConfig.mix's names: what a real agent's kind index means
        self.dream_agent: str | None = None  # how dream agents act
        self.records: dict[int, AgentRecord] = {}  # live, queued and leaving agents
        self.departed: deque[tuple[int, AgentRecord]] = deque(maxlen=keep_departed)
        self.seen = 0  # agents that ever joined
        self.left_by_reason: Counter = Counter()
        self.departed_ticks_lost = 0
        self._top_number: dict[int, int] = {}  # per EnvActor: the highest per-owner number used
        self.live_env: list[np.ndarray] = [_NO_IDS] * topo.n_env
        self.live_dream: list[np.ndarray] = [_NO_IDS] * topo.n_engine
        self.snapshots: list[EngineSnapshot | None] = [None] * topo.n_engine
        self._queue = [_Queue() for _ in range(topo.n_engine)]
        self._log: list[list[tuple[int, Membership]]] = [[] for _ in range(topo.n_engine)]
        self._dream_next = [0] * topo.n_engine

    # ----- records ------------------------------------------------------------------------------
    def _new_record(self, g: int, kind: str, tick: int) -> None:
        self.records[g] = AgentRecord(kind, tick)
        self.seen += 1
        if kind == "real":
            owner = g >> OWNER_SHIFT
            self._top_number[owner] = max(self._top_number.get(owner, -1), g & ((1 << OWNER_SHIFT) - 1))

    def _depart(self, ids) -> None:
        """Agents whose `left` is set move from the live records to the departed ones."""
        for g in ids:
            rec = self.records.pop(g)
            self.departed.append((g, rec))
            self.left_by_reason[rec.reason] += 1
            self.departed_ticks_lost += rec.ticks_lost

    def record(self, g: int) -> AgentRecord | None:
        """An agent's record: live, or among the recent departures (None when forgotten)."""
        rec = self.records.get(g)
        if rec is not None:
            return rec
        return next((r for d, r in reversed(self.departed) if d == g), None)

    # ----- reading ------------------------------------------------------------------------------
    def count(self) -> int:
        """How many agents are live after the last tick."""
        return sum(x.size for x in self.live_env) + sum(x.size for x in self.live_dream)

    def live(self) -> np.ndarray:
        """Ids of the agents live after the last tick (queued joins excluded)."""
        parts = self.live_env + self.live_dream
        return np.concatenate(parts) if parts else _NO_IDS

    def dream_live_after_queue(self, j: int) -> np.ndarray:
        """EngineActor j's dream agents that will be live at the next tick, joins not counted."""
        return self.live_dream[j][~np.isin(self.live_dream[j], self._queue[j].leave)]

    def queued(self, j: int) -> tuple[list[DreamJoin], np.ndarray]:
        """(joins, leave ids) queued at EngineActor j for the next tick."""
        q = self._queue[j]
        return q.joins, q.leave

    def agents_of_engine(self, j: int) -> np.ndarray:
        """Every live agent whose state EngineActor j holds."""
        return np.concatenate([self.live_env[e] for e in self.topo.envs_of[j]] + [self.live_dream[j]])

    # ----- dream agents, between ticks ----------------------------------------------------------
    def spread(self, n: int, engine: int | None) -> list[int]:
        """EngineActors for `n` new dream agents: all at `engine`, else round robin."""
        base = sum(self._dream_next)
        return [engine if engine is not None else (base + i) % self.topo.n_engine for i in range(n)]

    def queue_dream_joins(self, obs: np.ndarray, where: list[int], tick: int) -> np.ndarray:
        """Queue len(where) dream agents, agent i at EngineActor where[i] starting from obs[i].

        Room is checked before anything is queued (an EngineActor that found itself full would
        reject the tick after the EnvActors had already stepped).

        Raises:
            TickRejected: an EngineActor would hold more than its room; nothing is queued.
        """
        room = self.topo.dream_room
        for j in sorted(set(where)):
            q = self._queue[j]
            have = self.live_dream[j].size + sum(x.ids.size for x in q.joins) - q.leave.size
            if have + where.count(j) > room:
                raise TickRejected(f"EngineActor {j} has room for {room} dream agents; {have} are "
                                   f"live or queued, {where.count(j)} more cannot join")
        ids = np.empty(len(where), np.int64)
        for i, j in enumerate(where):
            ids[i] = agent_id(DREAM_OWNER + j, self._dream_next[j])
            self._dream_next[j] += 1
        owners = owner_of(ids) - DREAM_OWNER
        for j in np.unique(owners).tolist():
            rows = owners == j
            self._queue[j].joins.append(DreamJoin(ids=ids[rows], obs=obs[rows]))
        for g in ids.tolist():
            self._new_record(g, "dream", tick)
            self.records[g].agent = self.dream_agent
        return ids

    def queue_dream_leaves(self, ids: np.ndarray, tick: int) -> None:
        """Queue dream agents to leave at the next tick.

        Raises:
            TickRejected: an id that is not a live dream agent; nothing is queued.
        """
        owners = owner_of(ids) - DREAM_OWNER
        for g, j in zip(ids.tolist(), owners.tolist()):
            rec = self.records.get(g)
            if rec is None or rec.kind != "dream" or rec.left is not None or not 0 <= j < self.topo.n_engine:
                raise TickRejected(f"agent {g} is not a live dream agent; real agents leave when their env ends them")
        if np.unique(ids).size != ids.size:
            raise TickRejected("an agent is asked to leave twice")
        for j in np.unique(owners).tolist():
            self._queue[j].leaves.append(ids[owners == j])
        for g in ids.tolist():
            self.records[g].left, self.records[g].reason = tick, "removed"

    # ----- after a tick -------------------------------------------------------------------------
    def commit(self, tick: int) -> None:
        """Tick `tick` ran on every EngineActor: what was queued moves to the log."""
        for j in range(self.topo.n_engine):
            self._log_queue(j, tick)

    def _log_queue(self, j: int, tick: int) -> None:
        q = self._queue[j]
        if not q.empty:
            op = q.membership(tick)
            self._log[j].append((tick, op))
            self._queue[j] = _Queue()
            self._depart(op.leave.tolist())  # their leave ran

    def add_real(self, ids: np.ndarray, tick: int) -> None:
        for g in ids.tolist():
            self._new_record(g, "real", tick)

    def ingest(self, tick: int, reports: list[EnvReport], results: list[EngineResult]) -> None:
        """Read who is live, who joined and who left from a tick's reports and results."""
        for e, rep in enumerate(reports):
            self.ingest_report(e, rep, tick)
        for j, res in enumerate(results):
            self.live_dream[j] = res.dream_ids if res.dream_ids is not None else _NO_IDS
            if res.snapshot is not None:
                self.snapshot_taken(j, res.snapshot)

    def ingest_report(self, e: int, rep: EnvReport, tick: int) -> None:
        """EnvActor e's report of tick `tick`: who is live, who joined, who left. Also read after
        a failed tick from an EnvActor that stepped in it (its report was lost with the tick)."""
        if rep.live is not None:
            self.live_env[e] = rep.live
        if rep.joined is not None:
            self.add_real(rep.joined, tick)
        if rep.left is not None:
            kinds = rep.left_kind.tolist() if rep.left_kind is not None else [None] * rep.left.size
            for g, ret, k in zip(rep.left.tolist(), rep.left_return.tolist(), kinds):
                rec = self.records[g]
                rec.left, rec.reason, rec.episode_return = tick, "episode ended", ret
                if k is not None and k < len(self.agent_names):
                    rec.agent = self.agent_names[k]
            self._depart(rep.left.tolist())

    def snapshot_taken(self, j: int, snap: EngineSnapshot) -> None:
        """EngineActor j's state at `snap.tick` is saved: the log before it is no longer needed."""
        self.snapshots[j] = snap
        self._log[j] = [(k, op) for k, op in self._log[j] if k > snap.tick]

    # ----- recovery -----------------------------------------------------------------------------
    def replay_plan(self, j: int) -> tuple[EngineSnapshot, list[Membership]]:
        """For a restarted EngineActor j: its last snapshot and every membership change since,
        the queued one (for the tick that failed) last. The queue is emptied and the changes are
        logged as applied right after the snapshot, kept until the next snapshot."""
        snap = self.snapshots[j]
        ops = [op for k, op in self._log[j] if k > snap.tick]
        if not self._queue[j].empty:
            ops.append(self._queue[j].membership(snap.tick + 1))
            self._queue[j] = _Queue()
            self._depart(ops[-1].leave.tolist())  # their leave runs with the replay
        self._log[j] = [(snap.tick + 1, op) for op in ops]
        return snap, ops

    def engine_resumed(self, j: int, last_tick: int, failed_tick: int) -> None:
        """After a failed tick, EngineActor j's states stand at `last_tick`: if it did run the
        failed tick, what was queued for it is logged; its agents lost the ticks in between."""
        if last_tick == failed_tick:
            self._log_queue(j, failed_tick)
        lost = failed_tick - last_tick
        for g in self.agents_of_engine(j).tolist():
            rec = self.records.get(g)  # None: it left in the membership change being replayed
            if rec is not None:
                rec.ticks_lost += lost

    def env_restarted(self, e: int, new_ids: np.ndarray, tick: int) -> None:
        """EnvActor e was replaced: agents it kept are reset; the others left."""
        kept = set(new_ids.tolist())
        gone = []
        for g in self.live_env[e].tolist():
            rec = self.records[g]
            if g in kept:
                rec.resets += 1
            else:
                rec.left, rec.reason = tick, "env restarted with fewer agents"
                gone.append(g)
        self._depart(gone)
        for g in new_ids.tolist():
            if g not in self.records:
                self._new_record(g, "real", tick)
        self.live_env[e] = new_ids

    def next_number(self, owner: int) -> int:
        """The next unused per-owner number of `owner` (an EnvActor index)."""
        return self._top_number.get(owner, -1) + 1
