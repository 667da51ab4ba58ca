"""Planning over an ensemble: the members' mean reward and lowest continue decide, the members
hold the same agents in the same slots, and members that do not fit together are refused."""

import json

import numpy as np
import pytest
import torch

from worldssm.agents.ensemble import EnsembleEngine, EnsembleError
from worldssm.agents.planners import CEMPlanner, PlannerConfig
from worldssm.agents.rollout import plan_in_env
from worldssm.cli import main
from worldssm.engine import Engine
from worldssm.errors import WorldssmError

from tests.agents.test_planners import BOX, DISC, ScriptedEngine, info, model_for

CFG = PlannerConfig(samples=32, horizon=4, iterations=3, elites=4)


def optimist(a):
    """Action 0 pays 1.0, the others 0.9; nothing ever ends."""
    return np.where(a == 0, 1.0, 0.9), np.ones(len(a))


def sceptic(a):
    """The same rewards, but action 0 ends the episode."""
    return np.where(a == 0, 1.0, 0.9), np.where(a == 0, 0.01, 1.0)


def members(*rules, capacity=1 + 32):
    return [ScriptedEngine(model_for(DISC), capacity, rule) for rule in rules]


def test_one_member_that_expects_the_end_turns_the_plan():
    obs = np.zeros((1, 3), np.float32)
    alone = CEMPlanner(members(optimist)[0], CFG, seed=0).act(obs, info(1))
    assert alone.tolist() == [0], "the optimist alone takes the better-paid action"
    together = CEMPlanner(EnsembleEngine(members(optimist, sceptic)), CFG, seed=0).act(obs, info(1))
    assert together.tolist() != [0], "with a member that expects action 0 to end the episode, the plan avoids it"


def test_imagine_is_the_mean_reward_and_the_lowest_continue():
    a, b = members(optimist, sceptic)
    ens = EnsembleEngine([a, b])
    slots = ens.join(3)
    out = ens.imagine(slots, np.array([0, 1, 2]))
    torch.testing.assert_close(out.reward, torch.tensor([1.0, 0.9, 0.9]))
    torch.testing.assert_close(out.cont, torch.tensor([0.01, 1.0, 1.0]))
    torch.testing.assert_close(out.log_cont, torch.log(torch.tensor([0.01, 1.0, 1.0])))
    assert a.calls == b.calls == 1, "every member imagines every step"
    mean = EnsembleEngine(members(optimist, sceptic), cont="mean")
    out = mean.imagine(mean.join(2), np.array([0, 1]))
    torch.testing.assert_close(out.log_cont, torch.tensor([0.5 * np.log(0.01), 0.0], dtype=torch.float32))
    with pytest.raises(ValueError, match="cont must be 'min' or 'mean'"):
        EnsembleEngine(members(optimist, sceptic), cont="max")


def test_the_members_hold_the_same_agents_in_the_same_slots():
    a, b, c = members(optimist, sceptic, optimist, capacity=2 * (1 + 32))
    planner = CEMPlanner(EnsembleEngine([a, b, c]), CFG, seed=0)
    obs = np.zeros((2, 3), np.float32)
    for tick in range(3):
        planner.act(obs, info(2, tick=tick, first=tick == 0))
    free = [e.slab.num_free for e in (a, b, c)]
    assert free == [free[0]] * 3 and free[0] == a.capacity - 2, "each member holds the 2 agents, no forks left"
    owned = a.slab.owned_slots()
    assert np.array_equal(owned, b.slab.owned_slots()) and np.array_equal(owned, c.slab.owned_slots())
    for k in a.slab.tensors:  # one model (model_for seeds it): every member observed the same steps
        assert torch.equal(a.slab.tensors[k][owned], b.slab.tensors[k][owned]), k
        assert torch.equal(a.slab.tensors[k][owned], c.slab.tensors[k][owned]), k
        assert a.slab.tensors[k][owned].abs().sum() > 0, "the agents' states were observed into"
    assert a.calls == b.calls == c.calls == 3 * CFG.iterations * CFG.horizon


def test_members_that_do_not_fit_are_refused():
    with pytest.raises(EnsembleError, match="at least 2"):
        EnsembleEngine(members(optimist))
    box = Engine(model_for(BOX), 8, impl="torch")
    with pytest.raises(EnsembleError, match="member 1: action_space"):
        EnsembleEngine([Engine(model_for(DISC), 8, impl="torch"), box])
    a, b = members(optimist, sceptic)
    b.join(1)
    with pytest.raises(EnsembleError, match="member 1: capacity 33 with 32 free"):
        EnsembleEngine([a, b])


def test_diverged_slabs_are_named():
    a, b = members(optimist, sceptic)
    ens = EnsembleEngine([a, b])
    ens.join(2)
    b.leave(np.array([0]))  # behind the ensemble's back
    b.join(1)
    a.leave(np.array([1]))
    with pytest.raises(EnsembleError, match="member 1 answered join"):
        ens.join(1)


def test_plan_in_env_and_the_cli_plan_with_an_ensemble(pendulum_run, tmp_path, capsys):
    cfg = PlannerConfig(samples=4, horizon=3, iterations=1, elites=2)
    result = plan_in_env([pendulum_run, pendulum_run], None, cfg, episodes=2, seed=0)
    assert result["ensemble"] == 2 and result["checkpoint"] == [str(pendulum_run)] * 2
    assert len(result["returns"]) == 2 and result["raw_steps_per_s"] > 0
    with pytest.raises(WorldssmError, match="a saved value belongs to one model"):
        plan_in_env([pendulum_run, pendulum_run], None, cfg, episodes=1, value=True)
    out = tmp_path / "plan.json"
    code = main(["plan", "--checkpoint", str(pendulum_run), str(pendulum_run), "--episodes", "1", "--no-progress",
                 "--out", str(out), "--plan-samples", "4", "--plan-horizon", "3", "--plan-iterations", "1",
                 "--plan-elites", "2"])
    assert code == 0
    assert json.loads(out.read_text())["ensemble"] == 2
    assert capsys.readouterr().out.startswith("Pendulum-v1: mean return ")
