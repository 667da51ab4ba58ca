"""Atari at 64x64: area averaging keeps small objects; the registered ids make the game where
ale-py is installed and name the extra where it is not."""

import numpy as np
import pytest

from worldssm.envs.atari import downsample


def test_area_averaging_keeps_a_two_pixel_ball_and_the_mean():
    frame = np.zeros((210, 160, 3), np.uint8)
    frame[100:102, 80:82] = 255
    small = downsample(frame)
    assert small.shape == (64, 64, 3) and small.dtype == np.uint8
    assert small.max() > 0, "a 2x2 object survives (dimmed)"
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (210, 160, 3), dtype=np.uint8)
    assert abs(float(downsample(noise).mean()) - float(noise.mean())) < 1.0


def test_registered_game_or_a_clear_error():
    import gymnasium as gym

    import worldssm.envs  # noqa: F401 - registers the ids
    from worldssm.errors import MissingDependencyError

    try:
        import ale_py  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="worldssm\\[envs\\]"):
            gym.make("worldssm/Pong64-v0")
        return
    env = gym.make("worldssm/Pong64-v0")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    obs, *_ = env.step(0)
    assert env.observation_space.contains(obs)
