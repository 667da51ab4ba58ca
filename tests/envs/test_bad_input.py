"""Bad actions raise ValueError naming the agent and the problem, and change nothing."""

import numpy as np
import pytest

from worldssm.envs import SwarmEnv, make
from worldssm.envs.swarm.core import STATE_FIELDS


def snapshot(env):
    return env.state_dict()


def assert_same(a, b):
    for f in STATE_FIELDS:
        np.testing.assert_array_equal(a[f], b[f])
    assert (a["t"], a["next_id"], a["rng"]) == (b["t"], b["next_id"], b["rng"])


@pytest.mark.parametrize(
    "actions,match",
    [
        (np.zeros(5, np.int64), r"shape \(5,\), expected \(6,\)"),
        (np.zeros((6, 1), np.int64), "shape"),
        (np.zeros(6, np.float32), "dtype float32"),
        (np.array([0, 0, 7, 0, 0, 0]), r"agent_2 \(row 2\): action 7 is out of range \[0, 5\)"),
        (np.array([0, 0, 0, -1, 0, 0]), r"agent_3 .*action -1 is out of range"),
        ([0, 0, 0, 0, 0, 0], "numpy array"),
    ],
)
def test_batched_discrete_bad_actions(actions, match):
    env = SwarmEnv(n_agents=6)
    env.reset(seed=0)
    before = snapshot(env)
    with pytest.raises(ValueError, match=match):
        env.step(actions)
    assert_same(before, snapshot(env))


def test_bad_action_leaves_future_identical():
    a, b = SwarmEnv(n_agents=6), SwarmEnv(n_agents=6)
    a.reset(seed=4)
    b.reset(seed=4)
    with pytest.raises(ValueError):
        a.step(np.full(6, 9))
    good = np.array([1, 2, 3, 4, 0, 1])
    for x, y in zip(a.step(good)[:4], b.step(good)[:4]):
        np.testing.assert_array_equal(x, y)


def test_batched_continuous_nan_names_agent():
    env = SwarmEnv(n_agents=4, action_mode="continuous")
    env.reset(seed=0)
    before = snapshot(env)
    bad = np.zeros((4, 2), np.float32)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r"agent_1 \(row 1\).*NaN"):
        env.step(bad)
    with pytest.raises(ValueError, match="dtype int64"):
        env.step(np.zeros((4, 2), np.int64))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((4, 3), np.float32))
    assert_same(before, snapshot(env))


def _dead_agent_env():
    env = make("swarm_v0", n_agents=6, energy_init=0.01, spawn_prob=0.0)
    env.reset(seed=0)
    env.step({a: 0 for a in env.agents})
    env.batched.energy[:3] = 1.0
    env.batched.energy[3:] = 0.001
    env.step({a: 0 for a in env.agents})
    return env


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda acts, env: acts.update({"agent_5": 0}), "agent_5: got an action but the agent is not alive"),
        (lambda acts, env: acts.update({"nobody": 0}), "'nobody': got an action for an unknown agent"),
        (lambda acts, env: acts.pop("agent_1"), "agent_1: live agent has no action"),
        (lambda acts, env: acts.update({"agent_0": 1.0}), "agent_0: action has dtype float64"),
        (lambda acts, env: acts.update({"agent_2": np.array([1, 2])}), r"agent_2: action has shape \(2,\)"),
        (lambda acts, env: acts.update({"agent_1": 5}), r"agent_1 \(row 1\): action 5 is out of range"),
    ],
)
def test_parallel_bad_actions(mutate, match):
    env = _dead_agent_env()
    assert env.agents == ["agent_0", "agent_1", "agent_2"]
    before = snapshot(env.batched)
    agents_before = list(env.agents)
    acts = {a: 0 for a in env.agents}
    mutate(acts, env)
    with pytest.raises(ValueError, match=match):
        env.step(acts)
    assert_same(before, snapshot(env.batched))
    assert env.agents == agents_before


def test_parallel_continuous_nan():
    env = make("swarm_v0", n_agents=3, action_mode="continuous")
    env.reset(seed=0)
    before = snapshot(env.batched)
    acts = {a: np.zeros(2, np.float32) for a in env.agents}
    acts["agent_2"] = np.array([0.0, np.inf], np.float32)
    with pytest.raises(ValueError, match="agent_2.*NaN or infinity"):
        env.step(acts)
    assert_same(before, snapshot(env.batched))


def test_gym_adapter_bad_actions():
    env = make("CartPole-v1", api="batched", n_agents=3)
    env.reset(seed=0)
    state = [e.unwrapped.state.copy() for e in env.envs]
    with pytest.raises(ValueError, match=r"agent_1 \(row 1\): action 2 is out of range \[0, 2\)"):
        env.step(np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="dtype float64"):
        env.step(np.zeros(3))
    for s, e in zip(state, env.envs):
        np.testing.assert_array_equal(s, e.unwrapped.state)


def test_gym_view_bad_actions():
    import gymnasium as gym

    env = gym.make("worldssm/Swarm-v0").unwrapped
    env.reset(seed=0)
    before = snapshot(env.swarm)
    rng_before = env._rng.bit_generator.state
    for bad, match in ((9, "out of range"), (1.5, "not an integer"), (np.array([1, 2]), "not an integer")):
        with pytest.raises(ValueError, match=f"agent_0: .*{match}"):
            env.step(bad)
    assert_same(before, snapshot(env.swarm))
    assert env._rng.bit_generator.state == rng_before
