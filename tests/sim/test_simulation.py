"""The Simulation's tick logic on the local backend (same workers as under Ray, no Ray)."""

import numpy as np
import pytest

from tests.sim.sim_helpers import model_source, slab_states
from worldssm.errors import TickRejected, WorldssmError
from worldssm.sim import SimConfig, Simulation
from worldssm.sim.ids import DREAM_OWNER, OWNER_SHIFT
from worldssm.sim.messages import Predictions

USER = "tests.sim.user_agents:Constant"  # users' agents by import path (tests/sim/user_agents.py)
USER_DISCRETE = "tests.sim.user_agents:Always"


def local(**kw):
    env = kw.get("env", "Pendulum-v1")
    src = model_source(env, **({"max_steps": 30} if env == "swarm_v0" else {}))
    return Simulation(SimConfig(model=src, backend="local", **kw))


def engine_state(sim):
    return [s["state"] for s in slab_states([a.snapshot() for a in sim.engine_actors])]


def test_real_mode_every_agent_accounted_for_across_episodes():
    sim = local(env="swarm_v0", env_kwargs={"max_steps": 30}, agents=24, env_actors=2,
                engine_actors=2, agent="greedy")
    results = [sim.tick() for _ in range(70)]  # > 2 episodes: every agent leaves and new ones join
    s = sim.summary()
    assert s["agents_missing"] == []
    assert s["agents_seen"] > 24 * 2, "episodes ended and new agents joined"
    left = [a for a in s["agents"].values() if a["left"] is not None]
    assert left and all(a["reason"] == "episode ended" and a["episode_return"] is not None for a in left)
    assert results[-1].agents == s["agents_live"] > 0
    assert all(r.env_ms > 0 and r.model_ms > 0 for r in results)


class _Recorder:
    """Wraps an agent and keeps the AgentInfo of every call."""

    def __init__(self, agent):
        self.agent, self.infos = agent, []

    def act(self, obs, info):
        self.infos.append(info)
        return self.agent.act(obs, info)


def test_predictions_reach_the_agents():
    """What the engine predicted at tick t for an agent is what that agent's info holds at t+1."""
    sim = local(agents=4, env_actors=1)
    batch = sim.env_actors[0].worker.batches[0]
    batch.agents[0] = rec = _Recorder(batch.agents[0])
    sim.tick()
    first = rec.infos[-1]
    assert np.isnan(first.pred_reward).all(), "nothing is predicted before the first observe"
    assert first.first.all() and first.tick == 1
    sent = Predictions.from_bytes(sim._preds[0])  # the engine's rows for the agents of tick 1
    sim.tick()
    info = rec.infos[-1]
    assert info.tick == 2 and not info.first.any()
    np.testing.assert_array_equal(info.pred_reward, sent.reward)
    np.testing.assert_array_equal(info.pred_cont, sent.cont)
    assert np.isfinite(info.pred_cont).all() and ((info.pred_cont > 0) & (info.pred_cont < 1)).all()


def test_dream_agents_join_and_leave_between_ticks():
    sim = local(mode="dream", agents=6, engine_actors=2)
    first = sim.live_agents()
    assert first.size == 0, "dream agents join at the first tick"
    sim.tick()
    live = sim.live_agents()
    assert live.size == 6 and set(np.unique(live >> OWNER_SHIFT)) == {DREAM_OWNER, DREAM_OWNER + 1}
    new = sim.add_agents(3, engine=1)
    sim.remove_agents(live[:2])
    assert sim.live_agents().size == 6, "nothing changes before the next tick"
    sim.tick()
    after = set(sim.live_agents().tolist())
    assert after == (set(live.tolist()) - set(live[:2].tolist())) | set(new.tolist())
    free = [a.worker.engine.slab.num_free for a in sim.engine_actors]
    sim.tick()
    assert [a.worker.engine.slab.num_free for a in sim.engine_actors] == free
    with pytest.raises(TickRejected):
        sim.remove_agents(live[:1])  # already gone


def test_mixed_mode_runs_both_kinds():
    sim = local(mode="mixed", agents=8, dream_fraction=0.25, env_actors=2, engine_actors=1)
    for _ in range(5):
        sim.tick()
    owners = set((sim.live_agents() >> OWNER_SHIFT).tolist())
    assert owners == {0, 1, DREAM_OWNER}
    kinds = [a["kind"] for a in sim.summary()["agents"].values()]
    assert kinds.count("dream") == 2 and kinds.count("real") == 6


@pytest.mark.parametrize("bad", [
    "unknown", "wrong_dtype", "wrong_shape", "dream_unknown", "nan",
])
def test_bad_tick_changes_nothing(bad):
    sim = local(mode="mixed", agents=6, env_actors=1)
    sim.tick()
    sim.tick()
    real = int(sim.live_agents()[0])
    actions = {
        "unknown": {12345: np.array([0.5], np.float32)},
        "wrong_dtype": {real: np.array([1], np.int64)},
        "wrong_shape": {real: np.array([0.5, 0.5], np.float32)},
        "dream_unknown": {(DREAM_OWNER << OWNER_SHIFT) + 99: np.array([0.5], np.float32)},
        "nan": {real: np.array([np.nan], np.float32)},
    }[bad]
    w = sim.env_actors[0].worker
    obs = np.concatenate([b.obs for b in w.batches]).copy()
    states = engine_state(sim)
    t = sim.t
    with pytest.raises(TickRejected):
        sim.tick(actions)
    assert sim.t == t
    assert np.array_equal(np.concatenate([b.obs for b in w.batches]), obs)
    for a, b in zip(states, engine_state(sim)):
        for k in a:
            assert np.array_equal(a[k], b[k]), k
    sim.tick({real: np.array([0.5], np.float32)})  # a good override still works afterwards
    assert sim.t == t + 1


def test_override_reaches_the_env():
    sim = local(agents=2, env_actors=1, agent="pattern")
    sim.tick()
    w = sim.env_actors[0].worker
    g = int(sim.live_agents()[0])
    sent = []
    orig = w.batches[0].env.step
    w.batches[0].env.step = lambda a: (sent.append(a.copy()), orig(a))[1]
    sim.tick({g: np.array([1.75], np.float32)})
    row = int(np.flatnonzero(w.batches[0].ids == g)[0])
    assert sent[0][row, 0] == pytest.approx(1.75)
    assert sent[0][1 - row, 0] != pytest.approx(1.75)


def test_simulate_command_with_a_trained_checkpoint(pendulum_run, tmp_path):
    import json

    from worldssm.cli import main

    rc = main(["simulate", "--checkpoint", str(pendulum_run), "--agents", "6", "--mode", "mixed",
               "--ticks", "12", "--out", str(tmp_path), "--backend", "local", "--no-progress"])
    assert rc == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["ticks"] == 12 and s["agents_live"] == 6 and s["agents_missing"] == []
    assert s["config"]["env"] == "Pendulum-v1", "the env comes from the checkpoint"
    assert s["latency_ms"]["p99"] >= s["latency_ms"]["p50"] > 0
    assert "checkpoint" in s["model"]
    assert s["engine"] == "numpy on cpu"  # which step ran is on record


def test_simulate_command_engine_impl_torch(pendulum_run, tmp_path, capsys):
    import json

    from worldssm.cli import main

    rc = main(["simulate", "--checkpoint", str(pendulum_run), "--agents", "4", "--mode", "real",
               "--ticks", "5", "--out", str(tmp_path), "--backend", "local", "--no-progress",
               "--engine-impl", "torch"])
    assert rc == 0
    assert json.loads((tmp_path / "summary.json").read_text())["engine"] == "torch on cpu"
    assert "engine step: torch on cpu" in capsys.readouterr().out


def test_simulate_command_mixes_kinds_and_prints_each_kinds_returns(tmp_path, capsys):
    import json

    from worldssm.cli import main

    rc = main(["simulate", "--preset", "DEBUG", "--env", "swarm_v0", "--env-kwargs", '{"max_steps": 10}',
               "--agents", '{"planner": 2, "greedy": 3, "' + USER_DISCRETE + '": 3}', "--ticks", "11",
               "--agent-kwargs", '{"' + USER_DISCRETE + '": {"action": 2}}',
               "--out", str(tmp_path), "--backend", "local", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "  greedy: 3 finished episodes" in out and "  planner: 2 finished episodes" in out
    assert f"  {USER_DISCRETE}: 3 finished episodes" in out
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["config"]["agents"] == {"planner": 2, "greedy": 3, USER_DISCRETE: 3}
    assert s["config"]["agent_kwargs"] == {USER_DISCRETE: {"action": 2}}


def test_simulate_command_needs_a_model(tmp_path, capsys):
    from worldssm.cli import main

    assert main(["simulate", "--agents", "2", "--ticks", "1", "--out", str(tmp_path)]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_dream_agents_beyond_an_engines_room_are_rejected_before_anything_moves():
    sim = local(mode="mixed", agents=4, dream_fraction=0.5, env_actors=1, engine_actors=1)
    sim.tick()
    room = sim.topo.dream_room
    live = sim.live_agents().size
    before = [w.worker.batches[0].obs.copy() for w in sim.env_actors], engine_state(sim)
    with pytest.raises(TickRejected, match=f"room for {room} dream agents; 2 are live or queued"):
        sim.add_agents(room - 1)  # 2 live + room - 1 > room
    with pytest.raises(TickRejected, match="not an EngineActor index"):
        sim.add_agents(1, engine=3)
    assert sim.live_agents().size == live and not sim.roster.queued(0)[0], "nothing was queued"
    assert all(np.array_equal(w.worker.batches[0].obs, o) for w, o in zip(sim.env_actors, before[0]))
    for k, v in engine_state(sim)[0].items():
        assert np.array_equal(v, before[1][0][k]), k
    sim.add_agents(room - 2)  # exactly full: accepted, and the next tick runs
    assert sim.tick().agents == live + room - 2
    sim.remove_agents(sim.roster.live_dream[0][:3])
    sim.add_agents(3)  # leaving agents make room in the same tick
    assert sim.tick().agents == live + room - 2


def _record_env_actions(sim):
    """Per tick, the actions each batched env of EnvActor 0 was stepped with, and the rows' kinds."""
    seen = []
    for b in sim.env_actors[0].worker.batches:
        step = b.env.step

        def recording(a, b=b, step=step):
            seen.append((np.array(a, copy=True), b.kind.copy()))
            return step(a)
        b.env.step = recording
    return seen


def test_planner_scripted_and_user_agents_share_an_env():
    """{kind: count} rows: each kind acts for its own rows; planner rows get the EngineActor's
    planned actions (inside the action space, not the placeholder), the user's agent (built from
    an import path with its kwargs) acts for its rows only and sees the engine's predictions."""
    sim = local(agents={"planner": 2, "random": 2, USER: 2}, agent_kwargs={USER: {"value": 1.5}}, env_actors=1)
    seen = _record_env_actions(sim)
    for _ in range(4):
        sim.tick()
    worker = sim.env_actors[0].worker
    kinds = ["planner", "random", USER]  # kind numbers follow SimConfig.agents' order
    assert len(seen) == 4
    for actions, kind in seen:
        assert np.bincount(kind, minlength=3).tolist() == [2, 2, 2], "rows take the kinds' shares"
        user = kind == kinds.index(USER)
        plan = kind == kinds.index("planner")
        np.testing.assert_array_equal(actions[user], 1.5)
        assert np.all(np.abs(actions[plan]) <= 2.0) and np.all(actions[plan] != 0.0), "planned, not placeholders"
        assert not np.any(actions[~user] == 1.5)
    user_agent = worker.batches[0].agents[kinds.index(USER)]
    assert [i.ids.size for i in user_agent.infos] == [2, 2, 2, 2]
    assert np.isfinite(user_agent.infos[-1].pred_reward).all(), "the user's agent sees the engine's predictions"
    planner = sim.engine_actors[0].worker.planner
    per_decision = planner.cfg.imagined_steps
    assert planner.stats["decisions"] == 4, "one batched search per tick"
    assert planner.stats["imagined_steps"] == 4 * 2 * per_decision, "for both planner agents"


def test_an_import_path_that_does_not_resolve_is_named_before_any_actor_starts():
    src = model_source("Pendulum-v1")
    for path, why in (("tests.sim.no_such_module:Agent", "cannot import"),
                      ("tests.sim.user_agents:Missing", "has no attribute"),
                      ("tests.sim.user_agents:Constant", "unexpected keyword")):
        cfg = SimConfig(model=src, backend="local", agents={"random": 2, path: 2},
                        agent_kwargs={path: {"colour": "red"}} if why == "unexpected keyword" else {})
        with pytest.raises(WorldssmError, match=why) as err:
            Simulation(cfg)
        assert path in str(err.value)
    with pytest.raises(ValueError, match="import path"):
        SimConfig(model=src, agents={"not a path": 2})


def test_dream_agents_can_plan():
    sim = local(mode="dream", agents=3, dream_agent="planner", engine_actors=1)
    for _ in range(3):
        sim.tick()
    assert sim.live_agents().size == 3
    planner = sim.engine_actors[0].worker.planner
    assert planner.stats["imagined_steps"] == 3 * 3 * planner.cfg.imagined_steps, "each dream agent plans every tick"


def test_greedy_shares_a_swarm_and_the_summary_scores_each_kind():
    """In swarm_v0 the greedy food seeker acts for its share of the rows beside random agents;
    the summary's returns_by_agent credits every finished episode to the kind that acted, and
    greedy eats more than random."""
    sim = local(env="swarm_v0", env_kwargs={"max_steps": 30}, agents={"greedy": 12, "random": 12},
                env_actors=1)
    for _ in range(31):
        sim.tick()
    s = sim.summary()
    by = s["returns_by_agent"]
    assert set(by) == {"greedy", "random"} and by["greedy"]["episodes"] == by["random"]["episodes"] == 12
    finished = [a for a in s["agents"].values() if a["episode_return"] is not None]
    assert sorted(a["agent"] for a in finished) == ["greedy"] * 12 + ["random"] * 12
    assert by["greedy"]["mean_return"] > by["random"]["mean_return"]


def test_an_env_whose_spaces_are_not_the_models_is_refused_by_name():
    src = model_source("Pendulum-v1")
    with pytest.raises(WorldssmError, match=r"CartPole-v1's observation space differs from the model's in shape"):
        Simulation(SimConfig(model=src, env="CartPole-v1", backend="local", agent="random"))


def test_simulate_command_engine_state_dtype_reaches_the_engine(pendulum_run, tmp_path, capsys):
    """bfloat16 SSM rows in the EngineActor: the numpy step declines them, so the summary says torch."""
    import json

    from worldssm.cli import main

    rc = main(["simulate", "--checkpoint", str(pendulum_run), "--agents", "4", "--mode", "real",
               "--ticks", "5", "--out", str(tmp_path), "--backend", "local", "--no-progress",
               "--engine-state-dtype", "bfloat16"])
    assert rc == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["engine"] == "torch on cpu" and s["config"]["engine_state_dtype"] == "bfloat16"
