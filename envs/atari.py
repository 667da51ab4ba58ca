"""Atari games through ale-py at 64x64 RGB (the DreamerV3 / world-model benchmark setting).

`worldssm/Pong64-v0` and `worldssm/Breakout64-v0` are Gymnasium ids (registered on import of
`worldssm.envs`; made only where ale-py is installed, `pip install 'worldssm[envs]'`): the
ALE v5 game with a frame skip of 4, no sticky actions, the minimal action set, and each
210x160 frame averaged down to 64x64 (area averaging, so a 2-pixel ball is dimmed, never lost).
"""

from __future__ import annotations

import numpy as np

from worldssm.errors import require

SIZE = 64
GAMES = {"worldssm/Pong64-v0": "ALE/Pong-v5", "worldssm/Breakout64-v0": "ALE/Breakout-v5"}


def _edges(n_in: int, n_out: int) -> np.ndarray:
    """Start index of each of `n_out` nearly equal blocks covering `n_in` source pixels."""
    return np.floor(np.arange(n_out) * n_in / n_out).astype(np.intp)


def downsample(frame: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Area-average a uint8 [H, W, C] frame to [size, size, C]."""
    h, w = frame.shape[:2]
    rows, cols = _edges(h, size), _edges(w, size)
    sums = np.add.reduceat(np.add.reduceat(frame.astype(np.uint32), rows, axis=0), cols, axis=1)
    counts = np.diff(np.r_[rows, h])[:, None] * np.diff(np.r_[cols, w])[None, :]
    return (sums / counts[..., None] + 0.5).astype(np.uint8)


def make_game(ale_id: str, render_mode: str | None = None, **kwargs):
    """The ALE game `ale_id` with 64x64 observations (the entry point of the registered ids)."""
    gym = require("gymnasium", "gymnasium>=1.0")
    ale_py = require("ale_py", "worldssm[envs]")
    gym.register_envs(ale_py)
    kwargs.setdefault("frameskip", 4)
    kwargs.setdefault("repeat_action_probability", 0.0)
    env = gym.make(ale_id, render_mode=render_mode, **kwargs)
    space = gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    return gym.wrappers.TransformObservation(env, downsample, space)


def register() -> None:
    """Register the 64x64 games with Gymnasium (cheap: nothing is imported until one is made)."""
    import gymnasium

    for gid, ale_id in GAMES.items():
        if gid not in gymnasium.registry:
            gymnasium.register(id=gid, entry_point="worldssm.envs.atari:make_game", kwargs={"ale_id": ale_id},
                               max_episode_steps=27_000)
