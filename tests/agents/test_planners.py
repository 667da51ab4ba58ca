"""Planners: they find what the (here scripted) model rewards, respect predicted episode ends,
batch all agents into one engine call per imagined step, never grow the slab, and refuse or
report what they cannot do."""

import numpy as np
import pytest
import torch

from worldssm.agents import AgentInfo
from worldssm.agents.planners import CEMPlanner, MPPIPlanner, PlannerConfig, PlannerError, make_planner
from worldssm.engine import Engine
from worldssm.engine.engine import EngineOutput
from worldssm.errors import WorldssmWarning


class ScriptedEngine(Engine):
    """A real Engine (slots, forks, validation) whose imagined reward and continue flag are set
    by a rule of the action: the planner's search is tested without training a model."""

    def __init__(self, model, capacity, rule):
        super().__init__(model, capacity, impl="torch")
        self.rule, self.calls, self.rows = rule, 0, []

    def imagine(self, slots, actions, decode=False, latents=True):
        out = super().imagine(slots, actions, decode, latents)
        self.calls += 1
        self.rows.append(len(slots))
        reward, cont = self.rule(np.asarray(actions))
        cont = torch.as_tensor(cont, dtype=torch.float32)
        return EngineOutput(out.z, torch.as_tensor(reward, dtype=torch.float32), cont, out.obs, torch.log(cont), out.h)


def model_for(action_space):
    from worldssm.model import WorldModel, preset

    obs = {"type": "box", "shape": [3], "dtype": "float32", "low": np.full(3, -1, np.float32),
           "high": np.full(3, 1, np.float32)}
    torch.manual_seed(0)
    return WorldModel(preset("DEBUG"), obs, action_space).eval()


BOX = {"type": "box", "shape": [1], "dtype": "float32", "low": np.array([-2.0], np.float32),
       "high": np.array([2.0], np.float32)}
DISC = {"type": "discrete", "n": 3}


def info(n, tick=0, first=True):
    return AgentInfo(ids=np.arange(n, dtype=np.int64), tick=tick, first=np.full(n, first))


def test_mppi_finds_the_rewarded_action():
    eng = ScriptedEngine(model_for(BOX), 2 + 2 * 64, lambda a: (-(a[:, 0] - 1.3) ** 2, np.ones(len(a))))
    planner = MPPIPlanner(eng, PlannerConfig(samples=64, horizon=3, iterations=5, elites=8))
    obs = np.zeros((2, 3), np.float32)
    act = planner.act(obs, info(2))
    assert act.shape == (2, 1) and act.dtype == np.float32
    np.testing.assert_allclose(act[:, 0], 1.3, atol=0.15)


def test_a_predicted_end_at_step_one_zeroes_everything_after():
    """Action 2 pays 1 at once but ends the episode; action 1 pays 0.6 every step. Over 5 steps
    the planner must take 1; a planner that ignored the continue flag would take 2 (5 > 3)."""

    def rule(a):
        return np.where(a == 2, 1.0, np.where(a == 1, 0.6, 0.0)), np.where(a == 2, 0.0, 1.0)

    eng = ScriptedEngine(model_for(DISC), 1 + 128, rule)
    cfg = PlannerConfig(samples=128, horizon=5, iterations=4, elites=16, discount=1.0)
    assert CEMPlanner(eng, cfg).act(np.zeros((1, 3), np.float32), info(1)).tolist() == [1]
    ignoring = ScriptedEngine(model_for(DISC), 1 + 128, lambda a: (rule(a)[0], np.ones(len(a))))
    assert CEMPlanner(ignoring, cfg).act(np.zeros((1, 3), np.float32), info(1)).tolist() == [2]


def test_many_agents_share_each_imagined_step():
    eng = ScriptedEngine(model_for(DISC), 1000 + 1000 * 4, lambda a: (a.astype(float), np.ones(len(a))))
    cfg = PlannerConfig(samples=4, horizon=3, iterations=2, elites=2)
    planner = make_planner(eng, cfg)
    planner.act(np.zeros((1000, 3), np.float32), info(1000))
    assert eng.calls == cfg.horizon * cfg.iterations, "one engine call per imagined step for all agents"
    assert set(eng.rows) == {1000 * 4}
    assert planner.stats["imagined_steps"] == 1000 * cfg.imagined_steps


def test_the_slab_does_not_grow_over_a_thousand_decisions():
    eng = Engine(model_for(BOX), 3 + 3 * 4, impl="numpy")
    planner = make_planner(eng, PlannerConfig(samples=4, horizon=2, iterations=1, elites=2))
    rng = np.random.default_rng(0)
    for t in range(1000):
        planner.act(rng.standard_normal((3, 3)).astype(np.float32), info(3, tick=t, first=t % 200 == 0))
        assert eng.slab.num_owned == 3, f"decision {t}: candidate slots were not given back"
    assert planner.stats["decisions"] == 1000


def test_too_few_slots_is_refused_naming_the_need_and_changes_nothing():
    eng = Engine(model_for(BOX), 20, impl="numpy")
    planner = make_planner(eng, PlannerConfig(samples=16, horizon=2, iterations=1, elites=2))
    before = {k: v.clone() for k, v in eng.slab.tensors.items()}
    with pytest.raises(PlannerError, match="needs 34 free slots"):
        planner.act(np.zeros((2, 3), np.float32), info(2))
    assert eng.slab.num_owned == 0
    for k, v in eng.slab.tensors.items():
        assert torch.equal(v, before[k]), k


def test_nan_predictions_are_reported_with_the_agent_and_not_planned_on():
    def rule(a):
        r = -np.abs(a[:, 0] - 1.0)
        r[a[:, 0] > 1.5] = np.nan  # a diverged model: part of the action space gives NaN
        return r, np.ones(len(a))

    eng = ScriptedEngine(model_for(BOX), 2 + 2 * 32, rule)
    planner = MPPIPlanner(eng, PlannerConfig(samples=32, horizon=2, iterations=3, elites=4))
    with pytest.warns(WorldssmWarning, match=r"agents \[0, 1\]"):
        act = planner.act(np.zeros((2, 3), np.float32), info(2))
    assert np.isfinite(act).all() and (act[:, 0] <= 1.5).all()


def test_warm_start_and_episode_reset():
    """After a decision the plan is shifted by one step (its last step is the initial one again);
    the next decision starts from it; an episode's first step starts from the initial plan."""
    eng = ScriptedEngine(model_for(BOX), 1 + 32, lambda a: (-(a[:, 0] - 1.0) ** 2, np.ones(len(a))))
    cfg = PlannerConfig(samples=32, horizon=4, iterations=2, elites=4)
    planner = MPPIPlanner(eng, cfg)
    obs = np.zeros((1, 3), np.float32)
    planner.act(obs, info(1, 0, True))
    plan = planner._plan[0]  # [2 (mean, std), H, d] in half action ranges
    assert plan[0, -1, 0] == 0.0 and plan[1, -1, 0] == cfg.init_std, "the new last step is the initial one"
    assert plan[0, 0, 0] > 0.2, "the shifted plan keeps what was learnt (the target is +0.5 half range)"
    planner._plan[0] = np.full_like(plan, 0.9)
    planner.act(obs, info(1, 1, False))
    assert planner._plan[0][0, 0, 0] > 0.5, "a warm start: the decision began from the stored plan"
    planner._plan[0] = np.full_like(plan, -0.9)
    act = planner.act(obs, info(1, 2, True))
    assert act[0, 0] > 0, "a first step ignores the stored plan"


def test_bad_settings():
    eng = Engine(model_for(BOX), 8, impl="numpy")
    with pytest.raises(PlannerError, match="samples latents"):
        make_planner(eng, PlannerConfig(samples=4, elites=2, particles=2))
    with pytest.raises(ValueError, match="elites"):
        PlannerConfig(samples=4, elites=8)
    with pytest.raises(ValueError, match="tail must be >= 0"):
        PlannerConfig(tail=-1)
    with pytest.raises(PlannerError, match="Discrete"):
        CEMPlanner(eng)
    with pytest.raises(ValueError, match="unknown planner preset"):
        make_planner(eng, "clever")


class TrueDynamics:
    """An engine look-alike that imagines with an env's true dynamics (a slot holds the env
    state): the planners' search, scoring and warm start, checked against ground truth."""

    sample = False

    def __init__(self, capacity, state_dim):
        from types import SimpleNamespace

        self.capacity, self.s = capacity, np.zeros((capacity, state_dim))
        self.free = list(range(capacity))[::-1]
        self.slab = SimpleNamespace(num_free=capacity)

    def to_host(self, *tensors):
        return [t.numpy() for t in tensors]

    def join(self, n):
        out = np.array([self.free.pop() for _ in range(n)], np.int64)
        self.slab.num_free = len(self.free)
        return out

    def leave(self, slots):
        slots = np.asarray(slots).tolist()
        assert not set(slots) & set(self.free) and len(set(slots)) == len(slots), "a slot left twice"
        self.free.extend(slots)
        self.slab.num_free = len(self.free)

    def observe(self, slots, obs, actions, resets=None):
        pass

    def fork_observed(self, slots, obs, n=1, resets=None):
        forks = self.join(len(slots) * n)
        self.s[forks] = np.repeat(self.state_of(obs), n, axis=0)
        return forks

    def imagine(self, slots, actions):
        from types import SimpleNamespace

        reward, cont, self.s[slots] = self.step(self.s[slots], actions)
        cont = torch.as_tensor(cont)
        return SimpleNamespace(reward=torch.as_tensor(reward), cont=cont, log_cont=torch.log(cont))


class TruePendulum(TrueDynamics):
    action_space = {"type": "box", "shape": [1], "dtype": "float32", "low": np.array([-2.0], np.float32),
                    "high": np.array([2.0], np.float32)}

    def state_of(self, obs):
        return np.stack([np.arctan2(obs[:, 1], obs[:, 0]), obs[:, 2]], 1)

    def step(self, s, a):  # Pendulum-v1's equations
        th, w = s.T
        u = np.clip(a.reshape(-1), -2, 2)
        reward = -(((th + np.pi) % (2 * np.pi) - np.pi) ** 2 + 0.1 * w**2 + 0.001 * u**2)
        w2 = np.clip(w + (15 * np.sin(th) + 3.0 * u) * 0.05, -8, 8)
        return reward, np.ones(len(s)), np.stack([th + w2 * 0.05, w2], 1)


class TrueCartPole(TrueDynamics):
    action_space = {"type": "discrete", "n": 2}

    def state_of(self, obs):
        return obs.astype(np.float64)

    def step(self, s, a):  # CartPole-v1's equations (Euler)
        x, xd, th, thd = s.T
        force = np.where(np.asarray(a) == 1, 10.0, -10.0)
        ct, st = np.cos(th), np.sin(th)
        temp = (force + 0.05 * thd**2 * st) / 1.1
        tha = (9.8 * st - ct * temp) / (0.5 * (4 / 3 - 0.1 * ct**2 / 1.1))
        xa = temp - 0.05 * tha * ct / 1.1
        s2 = np.stack([x + 0.02 * xd, xd + 0.02 * xa, th + 0.02 * thd, thd + 0.02 * tha], 1)
        alive = (np.abs(s2[:, 0]) <= 2.4) & (np.abs(s2[:, 2]) <= 12 * 2 * np.pi / 360)
        return np.ones(len(s)), alive.astype(np.float64), s2


def test_mppi_swings_the_true_pendulum_up():
    """With the true dynamics the "fast" preset scores about -135 over 10 seeds (a random policy
    about -1,200; the issue's target for a learned model is -200)."""
    from worldssm.agents.planners import PLANNER_PRESETS
    from worldssm.agents.rollout import run_episodes

    cfg = PLANNER_PRESETS["fast"]
    planner = MPPIPlanner(TruePendulum(10 * (cfg.samples + 1), 2), cfg, seed=0)
    result = run_episodes(planner, "Pendulum-v1", episodes=10, seed=0)
    assert result.mean_return > -200, result.returns


def test_cem_balances_the_true_cartpole_far_longer_than_chance():
    """Random actions last about 22 steps. With binary continue flags every candidate that
    survives the horizon scores the same, so the cart drifts off its track after a few hundred
    steps: a learned model's continue probabilities are what ranks safe states above risky ones."""
    from worldssm.agents.rollout import run_episodes

    cfg = PlannerConfig(samples=32, horizon=12, iterations=3, elites=4)
    planner = CEMPlanner(TrueCartPole(10 * (cfg.samples + 1), 4), cfg, seed=0)
    result = run_episodes(planner, "CartPole-v1", episodes=10, seed=0)
    assert result.mean_return > 120, result.returns


def test_a_random_tail_ranks_the_states_plans_end_in():
    """The cart at x = -2.0 runs towards the track's left end at 1 m/s, the pole upright. Every
    2-step plan survives its horizon, so without a tail all candidates tie and the planner keeps
    its first (push left); a random tail after the horizon sees which end state lasts longer, and
    the planner pushes right."""
    obs = np.array([[-2.0, -1.0, 0.0, 0.0]], np.float32)
    picks = {}
    for tail in (0, 30):
        cfg = PlannerConfig(samples=16, horizon=2, iterations=2, elites=2, tail=tail)
        planner = CEMPlanner(TrueCartPole(cfg.samples + 1, 4), cfg, seed=0)
        picks[tail] = int(planner.act(obs, info(1))[0])
        assert planner.stats["imagined_steps"] == 16 * (2 + tail) * 2
    assert picks == {0: 0, 30: 1}


def test_a_random_tail_keeps_the_true_cartpole_up_longer():
    """With binary continue flags a 12-step horizon drifts off the track (190.6 over these 10
    seeds); a 24-step random tail values where each plan leaves the cart (330.3)."""
    from worldssm.agents.rollout import run_episodes

    cfg = PlannerConfig(samples=32, horizon=12, iterations=3, elites=4, tail=24)
    planner = CEMPlanner(TrueCartPole(10 * (cfg.samples + 1), 4), cfg, seed=0)
    result = run_episodes(planner, "CartPole-v1", episodes=10, seed=0)
    assert result.mean_return > 280, result.returns
