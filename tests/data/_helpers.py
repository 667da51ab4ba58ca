"""Shared builders for the data tests: headers, steps records, a tiny image env, a full disk."""

from __future__ import annotations

import errno
import os

import gymnasium
import numpy as np

from worldssm.data.format import make_header

IMAGE_ENV_ID = "WorldssmTestTinyImage-v0"
IMAGE_MAX_STEPS = 5


def box_space(shape, low=-1.0, high=1.0, dtype="float32") -> dict:
    return {
        "type": "box",
        "shape": list(shape),
        "dtype": dtype,
        "low": np.full(shape, low, dtype),
        "high": np.full(shape, high, dtype),
    }


def vector_header(env_id="Test-v0", obs_dim=3, agent_ids=("a", "b")) -> dict:
    return make_header(env_id, box_space([obs_dim]), box_space([1]), list(agent_ids), {"seed": 0})


def steps(agent, episode, length, first=True, last=True, terminal=False, obs_dim=3, start=0.0):
    """A steps record whose obs[t, 0] = start + t (so positions can be traced)."""
    obs = np.zeros((length, obs_dim), np.float32)
    obs[:, 0] = start + np.arange(length)
    flags = np.zeros(length, bool)
    is_first, is_last, is_terminal = flags.copy(), flags.copy(), flags.copy()
    is_first[0] = first
    is_last[-1] = last
    is_terminal[-1] = terminal
    return {
        "kind": "steps",
        "agent": agent,
        "episode": episode,
        "obs": obs,
        "action": np.arange(length, dtype=np.float32)[:, None] / 10,
        "reward": np.where(is_first, 0.0, 1.0).astype(np.float32),
        "is_first": is_first,
        "is_last": is_last,
        "is_terminal": is_terminal,
    }


class TinyImageEnv(gymnasium.Env):
    """8x8x3 uint8 observations; pixel [0,0,0] holds the episode's termination step, [0,0,1] t.

    Terminates when t reaches a target drawn at reset from [2, 7]; registered with a time limit
    of IMAGE_MAX_STEPS, so some episodes are truncated instead.
    """

    def __init__(self):
        self.observation_space = gymnasium.spaces.Box(0, 255, (8, 8, 3), np.uint8)
        self.action_space = gymnasium.spaces.Discrete(3)
        self._t = 0
        self._target = 0

    def _obs(self):
        obs = np.full((8, 8, 3), 7, np.uint8)
        obs[0, 0, 0] = self._target
        obs[0, 0, 1] = self._t
        return obs

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        self._target = int(self.np_random.integers(2, 8))
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        return self._obs(), float(action), self._t >= self._target, False, {}


def register_image_env() -> str:
    if IMAGE_ENV_ID not in gymnasium.registry:
        gymnasium.register(
            id=IMAGE_ENV_ID, entry_point=TinyImageEnv, max_episode_steps=IMAGE_MAX_STEPS
        )
    return IMAGE_ENV_ID


class FullDisk:
    """A file object whose writes (or flush) fail like a full disk; close flushes again, as a
    buffered file does, so it fails again once the disk is full."""

    def __init__(self, file, at="write", code=errno.ENOSPC):
        self.file, self.at, self.code, self.full = file, at, code, False

    def _fail(self):
        self.full = True
        raise OSError(self.code, os.strerror(self.code))

    def write(self, data):
        if self.at == "write":
            self._fail()
        return self.file.write(data)

    def flush(self):
        if self.at == "flush" or self.full:
            self._fail()
        self.file.flush()

    def fileno(self):
        return self.file.fileno()

    def close(self):
        self.file.close()
        if self.full:
            self._fail()
