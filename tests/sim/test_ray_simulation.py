"""The Simulation under Ray: security settings, compiled graph vs plain calls vs local, 2
EngineActors on CPU, recovery from killed actors, rejected ticks. One Ray session per module."""

import faulthandler
import os
import signal
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.sim.sim_helpers import model_source, slab_states
from worldssm.errors import TickRejected
from worldssm.sim import SimConfig, Simulation, start_ray
from worldssm.sim.ids import DREAM_OWNER, OWNER_SHIFT

pytestmark = pytest.mark.ray


STALL_S = 240  # a test here takes well under a minute; past this its driver's stacks are kept


@pytest.fixture(autouse=True)
def stall_stacks(request):
    """Where a test here stalls (a CI run once spent 29 minutes in the tick that met a killed
    actor, past every Ray timeout), the stacks of the driver's threads after STALL_S seconds:
    faulthandler's own thread writes them (it needs neither the GIL nor a Ray call) to a file
    that outlives the run, and a warning names it. Off where pytest's own faulthandler_timeout
    is set."""
    if float(request.config.getini("faulthandler_timeout") or 0) > 0:
        yield
        return
    path = Path(tempfile.gettempdir()) / f"worldssm-stall-{os.getpid()}-{request.node.name}.txt"
    tasks = path.with_suffix(".threads.txt")
    # The threads as the kernel sees them, a second later (a daemon timer: it needs the GIL, which
    # a thread blocked in Ray's native code has released): in a stall on 2026-12-08 the main
    # thread sat in mmap and another thread of the driver spun in madvise for 20 minutes.
    timer = threading.Timer(STALL_S + 1, _dump_threads, (tasks,))
    timer.daemon = True
    with open(path, "w") as f:
        faulthandler.dump_traceback_later(STALL_S, file=f)
        timer.start()
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()
            timer.cancel()
    if path.stat().st_size:
        warnings.warn(f"{request.node.nodeid} stalled past {STALL_S} s; the driver's stacks then: {path}, "
                      f"its threads: {tasks}", stacklevel=1)
    else:
        path.unlink()
        tasks.unlink(missing_ok=True)


def _dump_threads(path: Path) -> None:
    """Each thread of this process: name, state, kernel wait channel, user and system CPU ticks,
    and the kernel stack where it can be read (Linux /proc; root for the stack)."""
    lines = []
    for task in sorted(Path(f"/proc/{os.getpid()}/task").iterdir(), key=lambda t: int(t.name)):
        def read(name, task=task):
            try:
                return (task / name).read_text().strip()
            except OSError as exc:
                return f"({exc.strerror})"
        stat = read("stat").rsplit(")", 1)[-1].split()
        cpu = f"utime {stat[11]} stime {stat[12]}" if len(stat) > 12 else ""
        lines.append(f"{task.name} {read('comm')} state {stat[0] if stat else '?'} wchan {read('wchan')} {cpu}")
        lines += ["    " + ln for ln in read("stack").splitlines()]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def ray_session():
    ray = start_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def src():
    return model_source("Pendulum-v1")


def cfg(src, **kw):
    base = dict(model=src, mode="mixed", agents=12, dream_fraction=1 / 3, env_actors=2, engine_actors=2,
                snapshot_every=4, seed=3)
    base.update(kw)
    return SimConfig(**base)


def snapshots(sim):
    if sim.cfg.backend == "local":
        raw = [a.snapshot() for a in sim.engine_actors]
    else:
        raw = [sim.ray.get(a.snapshot.remote()) for a in sim.engine_actors]
    return slab_states(raw)


def test_ray_is_local_authenticated_and_without_dashboard(ray_session):
    ray = ray_session
    from ray._raylet import AuthenticationMode, get_authentication_mode

    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert get_authentication_mode() == AuthenticationMode.TOKEN
    node = ray._private.worker.global_worker.node
    assert node.node_ip_address == "127.0.0.1"
    assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes())
    assert not node.address_info.get("webui_url")


def test_compiled_plain_and_local_agree_with_two_engine_actors(ray_session, src):
    """Same seeds, same ticks: the three executors leave bit-identical engine states."""
    states, sums = [], []
    for kw in (dict(executor="compiled"), dict(executor="plain"), dict(backend="local")):
        with Simulation(cfg(src, **kw)) as sim:
            results = [sim.tick() for _ in range(6)]
            assert all(not r.recovered for r in results)
            assert len(set((sim.live_agents() >> OWNER_SHIFT).tolist())) == 4  # 2 env + 2 dream owners
            states.append(snapshots(sim))
            sums.append(sim.summary()["agents_live"])
    assert sums == [12, 12, 12]
    for other in states[1:]:
        for a, b in zip(states[0], other):
            assert np.array_equal(a["slots"], b["slots"])
            for k in a["state"]:
                assert np.array_equal(a["state"][k], b["state"][k]), k


@pytest.mark.parametrize("executor", ["compiled", "plain"])
def test_killed_engine_actor_is_restored(ray_session, src, executor):
    ray = ray_session
    with Simulation(cfg(src, executor=executor)) as sim:
        for _ in range(6):  # snapshot at tick 4
            sim.tick()
        new_dreamers = sim.add_agents(2, engine=1)  # joins after the snapshot: must be replayed
        sim.tick()
        before = set(sim.live_agents().tolist())
        victim = sim.engine_actors[1]
        ray.kill(victim)
        results = [sim.tick() for _ in range(4)]
        assert any(r.recovered for r in results) and sim.recoveries == 1
        assert sim.engine_actors[1] is not victim
        s = sim.summary()
        assert s["agents_missing"] == []
        assert before <= set(sim.live_agents().tolist()), "no agent disappears"
        assert set(new_dreamers.tolist()) <= set(sim.live_agents().tolist())
        lost = {int(g): a["ticks_lost"] for g, a in s["agents"].items()}
        on_1 = [g for g in before if g >> OWNER_SHIFT in (1, DREAM_OWNER + 1)]
        on_0 = [g for g in before if g >> OWNER_SHIFT in (0, DREAM_OWNER)]
        # Engine 1 went back to its tick-4 snapshot: the agents on it lost the ticks since.
        assert all(lost[g] >= 8 - 4 for g in on_1 if g not in set(new_dreamers.tolist()))
        assert all(lost[g] <= 1 for g in on_0)
        assert s["ticks"] == sim.t and results[-1].agents == 14


def test_who_is_live_is_read_back_after_a_recovery(ray_session, src):
    """The tick that fails returns no results: after the recovery the Simulation asks the
    engines who is live. A leave and a join queued for the failed tick were replayed; the
    leaver is gone, the joiner is live, and every listed dream agent can be removed."""
    with Simulation(cfg(src)) as sim:
        for _ in range(6):  # snapshot at tick 4
            sim.tick()
        leaving = sim.roster.live_dream[1][:1].copy()
        sim.remove_agents(leaving)
        joined = sim.add_agents(1, engine=1)
        os.kill(int(sim.ray.get(sim.engine_actors[1].pid.remote())), signal.SIGKILL)
        res = sim.tick()
        assert res.recovered
        live = set(sim.live_agents().tolist())
        assert int(leaving[0]) not in live and int(joined[0]) in live
        assert res.agents == len(live) == sim.summary()["agents_live"]
        sim.remove_agents(sim.roster.dream_live_after_queue(1)[:2])  # no stale id is offered
        assert not sim.tick().recovered
        assert sim.summary()["agents_missing"] == []


def test_agents_that_come_and_go_in_the_failed_tick_are_accounted(ray_session, src):
    """Pendulum-v1 ends every episode at its 200th step. The engine dies just before tick 200:
    both EnvActors still step in it (their env step does not wait for the engine), so every
    agent leaves and new ones join, and the reports saying so go down with the tick. The
    recovery reads them from the EnvActors: no agent is left live on paper only, and every
    newcomer has a record."""
    with Simulation(cfg(src, mode="real", agents=8, engine_actors=1, snapshot_every=50)) as sim:
        for _ in range(199):
            assert not sim.tick().recovered
        before = set(sim.live_agents().tolist())
        os.kill(int(sim.ray.get(sim.engine_actors[0].pid.remote())), signal.SIGKILL)
        assert sim.tick().recovered and sim.t == 200
        for _ in range(3):
            assert not sim.tick().recovered
        s = sim.summary()
        live = set(sim.live_agents().tolist())
        assert s["agents_missing"] == [] and len(live) == 8 and not live & before
        ended = [a for g, a in s["agents"].items() if int(g) in before]
        assert len(ended) == 8 and all(a["left"] == 200 and a["reason"] == "episode ended" for a in ended), ended[:2]
        assert all(str(g) in s["agents"] for g in live)


@pytest.mark.parametrize("victim", [0, 1])
def test_killed_env_actor_restarts_with_agents_reset(ray_session, src, victim):
    """On 2 cores EnvActor 1 shares the engine's core and runs act and env step as one graph
    task, EnvActor 0 as two: either one dies and comes back."""
    ray = ray_session
    with Simulation(cfg(src, mode="real", agents=8, engine_actors=1)) as sim:
        for _ in range(3):
            sim.tick()
        before = sim.live_agents().copy()
        ray.kill(sim.env_actors[victim])
        results = [sim.tick() for _ in range(4)]
        assert sim.recoveries == 1 and any(r.recovered for r in results)
        s = sim.summary()
        assert s["agents_missing"] == [] and set(before.tolist()) <= set(sim.live_agents().tolist())
        resets = {int(g): a["resets"] for g, a in s["agents"].items()}
        assert all(resets[g] == 1 for g in before.tolist() if g >> OWNER_SHIFT == victim)
        assert all(resets[g] == 0 for g in before.tolist() if g >> OWNER_SHIFT == 1 - victim)


def test_bad_tick_rejected_under_compiled_graph(ray_session, src):
    with Simulation(cfg(src, agents=6, engine_actors=1)) as sim:
        sim.tick()
        sim.tick()
        before = snapshots(sim)
        real = int(sim.live_agents()[0])
        for bad in ({real + 10_000: np.array([0.1], np.float32)}, {real: np.array([1], np.int64)},
                    {real: np.zeros((1, 2), np.float32)}):
            with pytest.raises(TickRejected):
                sim.tick(bad)
        after = snapshots(sim)
        for k in before[0]["state"]:
            assert np.array_equal(before[0]["state"][k], after[0]["state"][k])
        assert sim.t == 2
        assert not sim.tick({real: np.array([0.1], np.float32)}).recovered


def test_simulate_command_on_ray_dream_mode(ray_session, pendulum_run, tmp_path):
    import json

    from worldssm.cli import main

    rc = main(["simulate", "--checkpoint", str(pendulum_run), "--agents", "8", "--mode", "dream",
               "--ticks", "15", "--engine-actors", "2", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["ticks"] == 15 and s["agents_live"] == 8 and s["recoveries"] == 0
    assert all(a["kind"] == "dream" for a in s["agents"].values())


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux-only")
def test_compiled_graph_pins_its_threads_and_restores_the_driver(ray_session, src):
    """Pinning: the EngineActor on the first core, the EnvActors round robin after it, the
    driver's thread on a spare core or the last one while it waits; an env step that shares a
    core with the engine goes before it, as one task with its act; the driver's own affinity is
    back after each tick; pin_cpus=False pins nothing."""
    before = os.sched_getaffinity(0)
    cores = sorted(before)
    n = len(cores)
    with Simulation(cfg(src, mode="real", agents=8, engine_actors=1)) as sim:
        assert sim._exec.cpus == [cores[1 % n], cores[2 % n], cores[0], cores[3] if n > 3 else cores[-1]]
        if n == 2:  # this machine: EnvActor 1 shares the engine's core and steps before it
            assert sim._exec.graph.env_step_first == (False, True)
            assert sim._exec.graph.step_waits_for == ((), ())
        results = [sim.tick() for _ in range(3)]
        assert os.sched_getaffinity(0) == before
        assert all(len(r.hop_ms) == 3 and min(r.hop_ms) >= 0 for r in results)
        assert all(sum(r.hop_ms) <= r.latency_ms for r in results)
        # the work chain happened in sequence inside the tick: it cannot exceed its latency
        assert all(0 < r.act_ms <= r.env_ms and r.engine_ms < r.work_ms <= r.latency_ms for r in results)
        pinned = snapshots(sim)
    with Simulation(cfg(src, mode="real", agents=8, engine_actors=1, pin_cpus=False)) as sim:
        assert sim._exec.cpus == [] and sim._exec.driver_cpu is None
        for _ in range(3):
            sim.tick()
        free = snapshots(sim)
    for k in pinned[0]["state"]:
        assert np.array_equal(pinned[0]["state"][k], free[0]["state"][k])


BACKENDS = [dict(executor="compiled"), dict(executor="plain"), dict(backend="local")]


@pytest.mark.parametrize("kw", BACKENDS, ids=["compiled", "plain", "local"])
def test_bad_joins_and_overflowing_actions_are_rejected_and_the_next_tick_runs(ray_session, src, kw):
    """NaN start observations, float64 values that overflow float32 (1e39) in start observations and
    in actions: each is a TickRejected before anything is queued or sent, and ticks go on."""
    with Simulation(cfg(src, agents=6, engine_actors=1, **kw)) as sim:
        sim.tick()
        before, t = snapshots(sim), sim.t
        real = int(sim.live_agents()[0])
        for obs in (np.full((1, 3), np.nan), np.full((1, 3), 1e39)):
            with pytest.raises(TickRejected, match="NaN or infinite"):
                sim.add_agents(1, obs=obs)
        assert all(not sim.roster.queued(j)[0] for j in range(sim.topo.n_engine)), "nothing queued"
        with pytest.raises(TickRejected, match="contains NaN or infinity \\(in float32\\)"):
            sim.tick({real: np.array([1e39])})
        assert sim.t == t
        after = snapshots(sim)
        for k in before[0]["state"]:
            assert np.array_equal(before[0]["state"][k], after[0]["state"][k]), k
        assert not sim.tick().recovered and sim.t == t + 1
        sim.add_agents(2, obs=np.zeros((2, 3)))  # good joins still work
        assert sim.tick().agents == 8


@pytest.mark.parametrize("kw", BACKENDS, ids=["compiled", "plain", "local"])
def test_a_rejection_inside_an_actor_comes_back_as_our_error(ray_session, src, kw):
    """If an actor rejects what reached it (here: the driver's own check is bypassed), the caller
    gets TickRejected with the actor's reason, not Ray's traceback, and the next tick runs."""
    with Simulation(cfg(src, mode="real", agents=4, engine_actors=1, **kw)) as sim:
        sim.tick()
        real = int(sim.live_agents()[0])
        sim._overrides = lambda actions: {0: {"ids": np.array([real]), "actions": np.full((1, 1), np.nan, np.float32)}}
        with pytest.raises(TickRejected) as err:
            sim.tick()
        text = str(err.value)
        assert text.startswith("EnvWorker 0: actions: row 0 contains NaN"), text
        assert "Traceback" not in text and "\x1b" not in text and "\n" not in text
        del sim._overrides
        assert not sim.tick().recovered


def test_planner_and_user_agents_agree_on_every_backend(ray_session, src):
    """Planner rows (real and dream, decided inside the EngineActor) and a user's agent from an
    import path with kwargs: the three executors leave bit-identical engine states."""
    user = "tests.sim.user_agents:Constant"
    states = []
    for kw in BACKENDS:
        with Simulation(cfg(src, agents={"planner": 3, "random": 3, user: 3}, agent_kwargs={user: {"value": -1.0}},
                            dream_agent="planner", engine_actors=1, **kw)) as sim:
            for _ in range(3):
                assert not sim.tick().recovered
            states.append(snapshots(sim))
    for other in states[1:]:
        for a, b in zip(states[0], other):
            assert np.array_equal(a["slots"], b["slots"])
            for k in a["state"]:
                assert np.array_equal(a["state"][k], b["state"][k]), k
