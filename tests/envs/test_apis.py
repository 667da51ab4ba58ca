"""PettingZoo and Gymnasium checkers on every env, view and adapter."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test, parallel_seed_test

import worldssm.envs as E
from worldssm.envs.parallel import ParallelFromBatched

PARALLEL = {
    "swarm": lambda: E.make("swarm_v0", n_agents=8, max_steps=60, energy_init=0.15,
                            spawn_prob=0.3),
    "swarm_image_continuous": lambda: E.make("swarm_v0", n_agents=4, max_steps=20,
                                             obs_mode="image", action_mode="continuous"),
    "cartpole": lambda: E.make("CartPole-v1", n_agents=3),
    "cartpole_autoreset": lambda: E.make("CartPole-v1", n_agents=3, autoreset="new_agent",
                                         max_agent_ids=12),
    "pendulum": lambda: E.make("Pendulum-v1", n_agents=2),
    "rps_roundtrip": lambda: ParallelFromBatched(
        E.make("pettingzoo/classic/rps_v2", api="batched")),
    "pong_roundtrip": lambda: ParallelFromBatched(
        E.make("pettingzoo/butterfly/cooperative_pong_v6", api="batched", max_cycles=30)),
}


@pytest.mark.parametrize("name", sorted(PARALLEL))
def test_parallel_api(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parallel_api_test(PARALLEL[name](), num_cycles=150)


@pytest.mark.parametrize("name", sorted(PARALLEL))
def test_parallel_seed(name):
    parallel_seed_test(PARALLEL[name], num_cycles=50)


@pytest.mark.parametrize("name", ["swarm", "cartpole_autoreset", "rps_roundtrip"])
def test_parallel_multi_step_determinism(name):
    # parallel_seed_test in PettingZoo 1.27.0 stops after one step (PettingZoo#1437).
    logs = []
    for _ in range(2):
        env = PARALLEL[name]()
        obs, _ = env.reset(seed=7)
        log = [obs]
        rng = np.random.default_rng(0)
        for _ in range(40):
            if not env.agents:
                break
            space = env.action_space(env.agents[0])
            acts = {}
            for a in env.agents:
                if hasattr(space, "n"):
                    acts[a] = int(rng.integers(space.n))
                else:
                    acts[a] = rng.uniform(-1, 1, space.shape).astype(space.dtype)
            log.append(env.step(acts))
        logs.append(log)
    assert len(logs[0]) > 5
    assert gym.utils.env_checker.data_equivalence(logs[0], logs[1], exact=True)


def test_spaces_are_cached_per_agent():
    env = E.make("swarm_v0", n_agents=4)
    env.reset(seed=0)
    a, b = env.agents[:2]
    assert env.observation_space(a) is env.observation_space(a)
    assert env.action_space(a) is not env.action_space(b)
    assert env.observation_space(a).shape == (env.batched.cfg.obs_dim,)


@pytest.mark.parametrize("kwargs", [{}, {"obs_mode": "image"}, {"action_mode": "continuous"}])
def test_gym_view_check_env(kwargs):
    env = gym.make("worldssm/Swarm-v0", render_mode="rgb_array", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape[2] == 3


def test_gym_view_episode_ends_when_controlled_agent_dies():
    env = gym.make("worldssm/Swarm-v0", energy_init=0.05, n_agents=4)
    env.reset(seed=0)
    for t in range(100):
        _, _, term, trunc, info = env.step(0)
        if term or trunc:
            break
    assert term and not trunc and t < 20


def test_registry():
    assert "swarm_v0" in E.names()
    assert "CartPole-v1" in E.names(include_gymnasium=True)
    assert "worldssm/Swarm-v0" in gym.registry
    assert isinstance(E.make("swarm_v0", api="batched"), E.SwarmEnv)
    with pytest.raises(ValueError, match="unknown env"):
        E.make("NoSuchEnv-v0")
    with pytest.raises(ValueError, match="api must be one of"):
        E.make("swarm_v0", api="aec")
    with pytest.raises(ValueError, match="no PettingZoo module"):
        E.make("pettingzoo/classic/nothing_v0")
    from worldssm.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match="pip install"):
        E.make("pettingzoo/sisl/pursuit_v5")  # needs scipy, not installed here
    with pytest.raises(ValueError, match="already registered"):
        E.register("swarm_v0", lambda: None)


def test_gym_adapter_autoreset_new_agent():
    env = E.make("CartPole-v1", api="batched", n_agents=2, autoreset="new_agent", max_agent_ids=5)
    assert env.metadata["autoreset_mode"] == "NewAgent"
    env.reset(seed=0)
    ids_seen = {0, 1}
    while env.num_agents:
        before = env.agent_ids.copy()
        obs, rew, term, trunc, info = env.step(np.zeros(env.num_agents, np.int64))
        done = term | trunc
        for new in info["spawned_ids"].tolist():
            assert new not in ids_seen
            ids_seen.add(new)
        assert len(info["spawned_ids"]) <= done.sum()
        np.testing.assert_array_equal(env.agent_ids,
                                      np.concatenate([before[~done], info["spawned_ids"]]))
    assert ids_seen == set(range(5)), "every id of the budget used once, then the episode ends"


def test_pettingzoo_batched_adapter():
    env = E.make("pettingzoo/classic/rps_v2", api="batched")
    obs, info = env.reset(seed=0)
    assert obs.shape == (2,) and [env.agent_name(i) for i in info["agent_ids"]] == ["player_0", "player_1"]
    obs, rew, term, trunc, info = env.step(np.array([0, 1]))
    assert rew.tolist() == [-1.0, 1.0]  # paper beats rock
    with pytest.raises(ValueError, match=r"player_1 \(row 1\): action 3 is out of range"):
        env.step(np.array([0, 3]))
