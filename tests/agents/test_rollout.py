"""Scoring agents in the real env: `run_episodes` plays one seeded episode per copy side by side,
and `plan_in_env` checks the env against the model before planning."""

import numpy as np
import pytest

from worldssm.agents import RandomAgent
from worldssm.agents.rollout import plan_in_env, run_episodes
from worldssm.errors import WorldssmError

PENDULUM_ACT = {"type": "box", "shape": [1], "dtype": "float32", "low": np.array([-2.0], np.float32),
                "high": np.array([2.0], np.float32)}


class Constant:
    def __init__(self, value):
        self.value, self.seen = value, []

    def act(self, obs, info):
        self.seen.append((info.tick, info.ids.copy(), info.first.copy()))
        return np.full((len(obs), 1), self.value, np.float32)


def test_episodes_are_seeded_copies_that_leave_when_done():
    import gymnasium as gym

    agent = Constant(0.5)
    result = run_episodes(agent, "Pendulum-v1", episodes=3, seed=7)
    assert result.lengths.tolist() == [200, 200, 200] and result.decision_ms.size == 200
    for i in range(3):  # copy i is a Pendulum-v1 reset with seed 7 + i, acting 0.5 throughout
        env = gym.make("Pendulum-v1")
        env.reset(seed=7 + i)
        ret = sum(env.step(np.array([0.5], np.float32))[1] for _ in range(200))
        assert result.returns[i] == pytest.approx(ret, rel=1e-5)
    assert agent.seen[0][2].all() and not agent.seen[1][2].any()
    assert result.summary()["mean_return"] == pytest.approx(result.returns.mean())


def test_episodes_of_different_lengths():
    result = run_episodes(RandomAgent({"type": "discrete", "n": 2}, seed=0), "CartPole-v1", episodes=4, seed=0)
    assert len(set(result.lengths.tolist())) > 1, "random CartPole episodes end at different ticks"
    assert result.decision_ms.size == result.lengths.max()
    assert (result.returns == result.lengths).all(), "CartPole pays 1 per step"
    with pytest.raises(ValueError, match="episodes must be >= 1"):
        run_episodes(RandomAgent({"type": "discrete", "n": 2}), "CartPole-v1", episodes=0)


def test_plan_in_env_with_a_trained_run(pendulum_run):
    from worldssm.agents.planners import PlannerConfig

    cfg = PlannerConfig(samples=4, horizon=3, iterations=1, elites=2)
    result = plan_in_env(pendulum_run, None, cfg, episodes=2, seed=0)
    assert result["env"] == "Pendulum-v1" and len(result["returns"]) == 2
    assert result["imagined_steps_per_agent_decision"] == 12 and result["imagined_steps_per_s"] > 0
    assert result["decision_ms_p99"] >= result["decision_ms_p50"] > 0
    assert result["raw_step_batch"] == 2 * 4 and result["raw_steps_per_s"] > 0
    assert result["planning_overhead"] == pytest.approx(result["raw_steps_per_s"] / result["imagined_steps_per_s"] - 1)


def test_raw_imagine_rate_leaves_the_engine_as_it_was(pendulum_run):
    from worldssm.agents.rollout import raw_imagine_rate
    from worldssm.engine import Engine
    from worldssm.model import load_model

    engine = Engine(load_model(pendulum_run)[0], capacity=8)
    mine = engine.join(2)
    before = engine.snapshot(mine)
    assert raw_imagine_rate(engine, 6, reps=2) > 0
    assert engine.slab.num_free == 6 and engine.snapshot(mine) == before, "its rows left, the owned states untouched"
    with pytest.raises(ValueError, match="6 free"):
        raw_imagine_rate(engine, 7)
    engine.leave(mine)


def test_plan_in_env_refuses_an_env_of_other_spaces(pendulum_run):
    with pytest.raises(WorldssmError, match="CartPole-v1's observation space differs from the model's"):
        plan_in_env(pendulum_run, "CartPole-v1", "fast", episodes=1)


def test_plan_in_env_plans_with_the_runs_value(pendulum_run, tmp_path):
    """--value: the value saved beside the run is found from the run (or a step of it) and its
    fit is recorded; a run without one is refused with the reason."""
    import shutil

    from worldssm.agents.planners import PlannerConfig
    from worldssm.agents.value import DreamValueConfig, fit_value_in_dreams, save_value
    from worldssm.data import RolloutDataset
    from worldssm.model import load_model

    run = tmp_path / "run"
    shutil.copytree(pendulum_run, run)
    cfg = PlannerConfig(samples=4, horizon=3, iterations=1, elites=2)
    assert plan_in_env(run, None, cfg, episodes=1, seed=0)["value"] is None
    with pytest.raises(WorldssmError, match="holds no value"):
        plan_in_env(run, None, cfg, episodes=1, seed=0, value=True)
    model, sidecar = load_model(run)
    vcfg = DreamValueConfig(dreams=4, iterations=60, context=4, batch=16, width=16, seed=0)
    value, stats = fit_value_in_dreams(model, RolloutDataset.load(sidecar["data"]["path"]).episodes, vcfg)
    save_value(run, value, vcfg, stats)
    result = plan_in_env(run, None, cfg, episodes=1, seed=0, value=True)
    assert result["value"] == stats and stats["method"] == "dreams"
