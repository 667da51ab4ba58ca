"""The roster: dream joins and leaves are queued, checked for room, logged once a tick ran them,
pruned at snapshots and replayed after a restore; real agents come and go by reports."""

import numpy as np
import pytest

from worldssm.errors import TickRejected
from worldssm.sim.config import SimConfig
from worldssm.sim.ids import DREAM_OWNER, agent_id, owner_of
from worldssm.sim.messages import EngineResult, EngineSnapshot, EnvReport
from worldssm.sim.roster import Roster
from worldssm.sim.topology import Topology


def roster(**kw):
    cfg = dict(mode="mixed", agents=8, dream_fraction=0.5, env_actors=2, engine_actors=2)
    cfg.update(kw)
    return Roster(Topology.build(SimConfig(**cfg)))


def obs(n):
    return np.zeros((n, 3), np.float32)


def snap(tick):
    e = np.zeros(0, np.int64)
    return EngineSnapshot(tick=tick, slab=[b""], rng=np.zeros(1, np.uint8), dream_ids=e, dream_slots=e,
                          dream_obs=np.zeros((0, 3), np.float32), dream_fresh=np.zeros(0, bool),
                          dream_reward=np.zeros(0, np.float32), dream_cont=np.zeros(0, np.float32))


def result(j, dream_ids, snapshot=None):
    return EngineResult(index=j, tick=0, preds=[], dream_ids=dream_ids, dream_reward=None, dream_cont=None,
                        model_ms=0.0, engine_ms=0.0, snapshot=snapshot, t_in=0.0, t_out=0.0)


def test_joins_get_ids_of_their_engine_and_wait_for_a_tick():
    r = roster()
    ids = r.queue_dream_joins(obs(3), r.spread(3, None), tick=1)
    assert owner_of(ids).tolist() == [DREAM_OWNER, DREAM_OWNER + 1, DREAM_OWNER]
    assert r.live().size == 0, "queued agents are not live before a tick ran"
    joins, leave = r.queued(0)
    assert [j.ids.tolist() for j in joins] == [[ids[0], ids[2]]] and leave.size == 0
    r.commit(1)
    assert r.queued(0) == ([], r.queued(0)[1]) and r.queued(0)[1].size == 0, "committed: the queue is empty"
    assert all(r.records[g].kind == "dream" and r.records[g].joined == 1 for g in ids.tolist())


def test_room_is_checked_before_anything_is_queued():
    r = roster()
    room = r.topo.dream_room
    r.queue_dream_joins(obs(room), [0] * room, tick=1)
    with pytest.raises(TickRejected, match=f"room for {room}"):
        r.queue_dream_joins(obs(2), [0, 1], tick=1)
    assert sum(j.ids.size for j in r.queued(1)[0]) == 0, "the rejected call queued nothing anywhere"
    assert len(r.records) == room


def test_leaves_are_checked_and_make_room():
    r = roster()
    ids = r.queue_dream_joins(obs(2), [0, 0], tick=1)
    r.commit(1)
    r.ingest(1, [], [result(0, ids), result(1, None)])
    with pytest.raises(TickRejected, match="not a live dream agent"):
        r.queue_dream_leaves(np.array([agent_id(0, 0)]), tick=2)  # a real agent's id
    with pytest.raises(TickRejected, match="twice"):
        r.queue_dream_leaves(np.array([ids[0], ids[0]]), tick=2)
    r.queue_dream_leaves(ids[:1], tick=2)
    assert r.dream_live_after_queue(0).tolist() == [ids[1]]
    assert r.record(int(ids[0])).left == 2 and r.record(int(ids[0])).reason == "removed"
    with pytest.raises(TickRejected, match="not a live dream agent"):
        r.queue_dream_leaves(ids[:1], tick=2)  # already leaving


def test_log_is_pruned_at_snapshots_and_replayed_after_a_restore():
    r = roster()
    r.snapshot_taken(0, snap(0))
    a = r.queue_dream_joins(obs(1), [0], tick=1)
    r.commit(1)
    b = r.queue_dream_joins(obs(1), [0], tick=2)
    r.commit(2)
    r.ingest(2, [], [result(0, np.concatenate([a, b]), snapshot=snap(2)), result(1, None)])
    c = r.queue_dream_joins(obs(1), [0], tick=3)
    r.commit(3)
    d = r.queue_dream_joins(obs(1), [0], tick=4)  # queued for a tick that fails
    s, ops = r.replay_plan(0)
    assert s.tick == 2
    assert [op.joins[0].ids.tolist() for op in ops] == [c.tolist(), d.tolist()], "after the snapshot, queue last"
    assert r.queued(0)[0] == [], "the queued join now travels with the replay"
    s, again = r.replay_plan(0)
    assert [op.joins[0].ids.tolist() for op in again] == [c.tolist(), d.tolist()], "kept until the next snapshot"


def test_reports_move_real_agents_and_record_returns():
    r = roster(mode="real")
    r.add_real(np.array([agent_id(0, 0), agent_id(0, 1)]), tick=0)
    rep = EnvReport(index=0, tick=1, live=np.array([agent_id(0, 1), agent_id(0, 2)]), joined=np.array([agent_id(0, 2)]),
                    left=np.array([agent_id(0, 0)]), left_return=np.array([-3.5], np.float32), act_ms=0.0,
                    step_ms=0.0, t_act=0.0, t_acted=0.0, t_step=0.0, t_out=0.0)
    quiet = EnvReport(index=1, tick=1, live=np.zeros(0, np.int64), joined=None, left=None, left_return=None,
                      act_ms=0.0, step_ms=0.0, t_act=0.0, t_acted=0.0, t_step=0.0, t_out=0.0)
    r.ingest(1, [rep, quiet], [result(0, None)])
    gone = r.record(agent_id(0, 0))
    assert agent_id(0, 0) not in r.records and r.left_by_reason == {"episode ended": 1}
    assert (gone.left, gone.reason, gone.episode_return) == (1, "episode ended", -3.5)
    assert r.records[agent_id(0, 2)].joined == 1 and sorted(r.live().tolist()) == [agent_id(0, 1), agent_id(0, 2)]
    assert r.next_number(0) == 3 and r.next_number(1) == 0


def test_engine_resumed_counts_ticks_lost_and_logs_what_it_ran():
    r = roster()
    r.live_env[0] = np.array([agent_id(0, 0)])
    r.add_real(r.live_env[0], 0)
    ids = r.queue_dream_joins(obs(1), [0], tick=5)
    r.ingest(4, [], [result(0, ids), result(1, None)])
    r.engine_resumed(0, last_tick=2, failed_tick=5)
    assert r.records[agent_id(0, 0)].ticks_lost == 3
    assert r.queued(0)[0], "an engine that did not run the failed tick keeps the queue"
    r.engine_resumed(0, last_tick=5, failed_tick=5)
    assert r.queued(0)[0] == [], "it ran the failed tick: the queue is logged"


def test_departed_records_are_bounded_and_totals_count_everyone():
    r = Roster(Topology.build(SimConfig(mode="real", agents=4, env_actors=1)), keep_departed=3)
    ids = np.array([agent_id(0, n) for n in range(10)])
    r.add_real(ids, tick=0)
    r.live_env[0] = ids
    rep = EnvReport(index=0, tick=1, live=np.zeros(0, np.int64), joined=None, left=ids,
                    left_return=np.zeros(10, np.float32), act_ms=0.0, step_ms=0.0, t_act=0.0, t_acted=0.0,
                    t_step=0.0, t_out=0.0)
    r.ingest(1, [rep], [result(0, None)])
    assert r.records == {} and len(r.departed) == 3, "only the most recent departures are kept"
    assert [g for g, _ in r.departed] == ids[-3:].tolist()
    assert r.seen == 10 and r.left_by_reason == {"episode ended": 10}
    assert r.record(int(ids[0])) is None and r.record(int(ids[-1])).left == 1
    assert r.next_number(0) == 10, "numbers are never reused even once their records are gone"


def test_a_replay_with_queued_leaves_then_resume_forgets_nobody():
    """Dream agents queued to leave when their EngineActor died leave with the replay; counting
    the ticks the others lost must not trip over them (they are still in the live list until the
    next tick's result)."""
    r = roster()
    r.snapshot_taken(0, snap(0))
    ids = r.queue_dream_joins(obs(3), [0, 0, 0], tick=1)
    r.commit(1)
    r.ingest(1, [], [result(0, ids), result(1, None)])
    r.queue_dream_leaves(ids[:1], tick=2)
    _, ops = r.replay_plan(0)
    r.engine_resumed(0, last_tick=0, failed_tick=2)
    assert ops[-1].leave.tolist() == ids[:1].tolist()
    assert r.record(int(ids[0])).reason == "removed" and int(ids[0]) not in r.records
    assert [r.records[int(g)].ticks_lost for g in ids[1:]] == [2, 2]
