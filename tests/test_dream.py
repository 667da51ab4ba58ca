"""The model as an environment: Gymnasium's and PettingZoo's checkers pass without warnings;
dreams start from real context and are seeded; the vector env steps all dreams in one engine
call and restarts finished ones from fresh context."""

import warnings

import gymnasium as gym
import numpy as np
import pytest

import worldssm.envs  # noqa: F401 - registers worldssm/Dream-v0
from worldssm.dream import DreamEnv, DreamParallelEnv, DreamVectorEnv


def _quiet(fn):
    """Run fn, returning the warnings raised that are not about our own old shard format."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [str(w.message) for w in caught if "format version 1" not in str(w.message)]


def test_dream_env_passes_check_env_without_warnings(pendulum_run, pendulum_data):
    from gymnasium.utils.env_checker import check_env

    env = gym.make("worldssm/Dream-v0", checkpoint=pendulum_run, data=pendulum_data, render_mode="rgb_array")
    assert _quiet(lambda: check_env(env.unwrapped)) == []
    assert env.action_space == gym.spaces.Box(-1, 1, (1,), np.float32), "a bounded Box is offered as [-1, 1]"


def test_reset_burns_in_real_context_and_is_seeded(pendulum_run, pendulum_data):
    env = DreamEnv(pendulum_run, data=pendulum_data, max_steps=20)
    obs = np.arange(3 * 4, dtype=np.float32).reshape(4, 3) / 20
    act = np.zeros((3, 1), np.float32)
    first, _ = env.reset(seed=1, options={"context": (obs, act)})
    np.testing.assert_array_equal(first, obs[-1]), "the first observation is the window's last real one"
    runs = []
    for _ in range(2):
        o, _ = env.reset(seed=7)
        steps = [o] + [env.step(np.array([0.3], np.float32))[0] for _ in range(5)]
        runs.append(np.stack(steps))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert all(env.observation_space.contains(o) for o in runs[0])
    o, r, term, trunc, _ = env.step(env.action_space.sample())
    assert isinstance(r, float) and isinstance(term, bool) and isinstance(trunc, bool)
    with pytest.raises(Exception, match="context must be"):
        env.reset(options={"context": (obs[:, :2], act)})


def test_truncation_after_max_steps(pendulum_run, pendulum_data):
    env = DreamEnv(pendulum_run, data=pendulum_data, max_steps=5)
    env.reset(seed=0)
    ends = [env.step(np.zeros(1, np.float32))[3] for _ in range(5)]
    assert ends[-1] or any(ends), "the fifth step truncates (unless the dream terminated first)"


def test_vector_env_one_engine_call_per_step_and_next_step_autoreset(pendulum_run, pendulum_data, monkeypatch):
    env = DreamVectorEnv(pendulum_run, 8, data=pendulum_data, max_steps=3)
    calls = []
    imagine = env.dreams.engine.imagine
    monkeypatch.setattr(env.dreams.engine, "imagine", lambda *a, **k: calls.append(len(a[0])) or imagine(*a, **k))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (8, 3) and env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    actions = np.zeros((8, 1), np.float32)
    ended_at = np.full(8, -1)
    for t in range(3):
        _, rew, term, trunc, _ = env.step(actions)
        ended_at[(ended_at < 0) & (term | trunc)] = t
        if t == 1:
            assert calls == [8], "step 2 imagines every dream in one batched call"
    assert (ended_at >= 0).all(), "every dream ended by its third step"
    assert (trunc | term)[ended_at == 2].all() and trunc[ended_at == 2].any(), "the third step truncates"
    done = term | trunc
    obs, rew, term, trunc, _ = env.step(actions)  # next-step autoreset of the rows that just ended
    assert (rew[done] == 0).all() and not (term | trunc)[done].any()
    assert all(env.single_observation_space.contains(o) for o in obs)


def test_parallel_env_passes_pettingzoo_checks(pendulum_run, pendulum_data):
    pz = pytest.importorskip("pettingzoo.test")
    make = lambda: DreamParallelEnv(pendulum_run, 3, data=pendulum_data, max_steps=10)  # noqa: E731
    assert _quiet(lambda: pz.parallel_api_test(make(), num_cycles=50)) == []
    assert _quiet(lambda: pz.parallel_seed_test(make, num_cycles=20)) == []
    env = make()
    env.reset(seed=0)
    while env.agents:
        left = set(env.agents)
        env.step({a: env.action_space(a).sample() for a in env.agents})
        assert set(env.agents) <= left, "an agent whose dream ended never comes back"


def test_a_run_remembers_its_data(pendulum_run):
    env = DreamEnv(pendulum_run)  # no data given: the run's own rollouts start the dreams
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


def test_an_env_whose_spaces_differ_from_the_model_is_named(pendulum_run, pendulum_data):
    """`env=` checks the real env the dreams stand for: the space and field that differ are named."""
    from worldssm.errors import WorldssmError

    env = DreamEnv(pendulum_run, data=pendulum_data, env="Pendulum-v1")
    assert env.action_space.shape == (1,)
    with pytest.raises(WorldssmError, match=r"CartPole-v1's observation space differs from the model's .* in shape"):
        DreamEnv(pendulum_run, data=pendulum_data, env="CartPole-v1")
    with pytest.raises(WorldssmError, match=r"MountainCarContinuous-v0's observation space differs"):
        DreamVectorEnv(pendulum_run, 2, data=pendulum_data, env="MountainCarContinuous-v0")


def test_vector_env_same_step_autoreset(pendulum_run, pendulum_data):
    """SameStep: the step that ends a dream returns its successor's first observation (drawn from
    real context) and keeps the ended dream's last observation in info["final_obs"]."""
    env = DreamVectorEnv(pendulum_run, 4, data=pendulum_data, max_steps=1, autoreset_mode="SameStep")
    twin = DreamVectorEnv(pendulum_run, 4, data=pendulum_data, max_steps=1)  # next-step, same seed
    assert env.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    a = np.zeros((4, 1), np.float32)
    env.reset(seed=5), twin.reset(seed=5)
    obs, rew, term, trunc, info = env.step(a)  # every dream ends at its first step
    last, rew2, term2, trunc2, _ = twin.step(a)
    assert (term | trunc).all() and info["_final_obs"].all()
    np.testing.assert_array_equal(np.stack(info["final_obs"]), last)
    np.testing.assert_array_equal(rew, rew2)
    np.testing.assert_array_equal(term, term2)
    assert not np.array_equal(obs, last), "the returned observations start new dreams"
    assert all(env.single_observation_space.contains(o) for o in obs)
    with pytest.raises(ValueError, match="autoreset_mode must be one of"):
        DreamVectorEnv(pendulum_run, 2, data=pendulum_data, autoreset_mode="sometimes")


def test_decoded_observations_are_clipped_into_the_space(pendulum_run, pendulum_data, monkeypatch):
    env = DreamVectorEnv(pendulum_run, 4, data=pendulum_data, max_steps=50)
    env.reset(seed=0)
    act = np.zeros((4, 1), np.float32)
    env.step(act)  # the real start observations
    imagine = env.dreams.engine.imagine

    def wild(slots, actions, decode=False, latents=True):  # a diverged decoder: far outside the space
        out = imagine(slots, actions, decode, latents)
        obs = out.obs.clone()
        obs[0], obs[1] = 1e6, -1e6
        return out._replace(obs=obs)

    monkeypatch.setattr(env.dreams.engine, "imagine", wild)
    obs = env.step(act)[0]
    space = env.single_observation_space
    assert obs.dtype == np.float32
    np.testing.assert_array_equal(obs[0], space.high)
    np.testing.assert_array_equal(obs[1], space.low)
    assert all(space.contains(o) for o in obs)
    np.testing.assert_array_equal(env.dreams.obs, obs)  # what a row's next observe would read


def test_image_dreams_round_into_uint8():
    import types

    import torch

    from worldssm.dream import Dreams

    stub = types.SimpleNamespace(observation_space=gym.spaces.Box(0, 255, (1, 2, 3), np.uint8))
    decoded = torch.tensor([[[[-7.0, 0.4, 0.6], [127.5, 254.6, 900.0]]]])
    want = np.array([[[[0, 0, 1], [128, 255, 255]]]], np.uint8)
    decoded_on_device = Dreams._bounded(stub, decoded)
    assert decoded_on_device.dtype == torch.uint8
    real_start = Dreams._clip(stub, decoded.numpy())
    for got in (decoded_on_device.numpy(), real_start):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)
