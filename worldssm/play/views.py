"""Pictures of predicted observations: a dream is drawn the way its env draws reality.

- Image observations: the (decoded) frame itself, scaled up.
- Vector observations of envs with an adapter (CartPole, Pendulum, Acrobot, MountainCar,
  LunarLander): a second copy of the env, used only for drawing, is put into the state the
  observation describes and rendered by the env's own renderer.
- Any other vector env: `StateView.frame` returns None and the app plots the predicted and the
  real observation dimensions over time instead.

An adapter maps one observation onto the unwrapped env's state; it is checked in the tests by
rendering a real observation both ways (the env's own frame and the adapter's must agree).
"""

from __future__ import annotations

import math

import numpy as np

from worldssm.errors import require


def _cartpole(env, obs):
    env.state = np.asarray(obs, np.float64)


def _pendulum(env, obs):
    env.state = np.array([math.atan2(float(obs[1]), float(obs[0])), float(obs[2])])
    env.last_u = None


def _acrobot(env, obs):
    env.state = np.array([math.atan2(float(obs[1]), float(obs[0])), math.atan2(float(obs[3]), float(obs[2])),
                          float(obs[4]), float(obs[5])])


def _mountaincar(env, obs):
    env.state = np.array([float(obs[0]), float(obs[1])])


def _lunarlander(env, obs):
    """Place the lander body (and its legs, rigidly) where the observation says; the terrain is
    the render copy's own, the same as reality's when both were reset with one seed."""
    from gymnasium.envs.box2d import lunar_lander as ll

    half_w, half_h = ll.VIEWPORT_W / ll.SCALE / 2, ll.VIEWPORT_H / ll.SCALE / 2
    x = float(obs[0]) * half_w + half_w
    y = float(obs[1]) * half_h + env.helipad_y + ll.LEG_DOWN / ll.SCALE
    lander = env.lander
    if not hasattr(env, "_worldssm_legs"):  # each leg's pose in the lander's frame, at reset
        c, s = math.cos(-lander.angle), math.sin(-lander.angle)
        legs = []
        for leg in env.legs:
            dx, dy = leg.position.x - lander.position.x, leg.position.y - lander.position.y
            legs.append((c * dx - s * dy, s * dx + c * dy, leg.angle - lander.angle))
        env._worldssm_legs = legs
    angle = float(obs[4])
    lander.position, lander.angle = (x, y), angle
    c, s = math.cos(angle), math.sin(angle)
    for leg, (lx, ly, la) in zip(env.legs, env._worldssm_legs):
        leg.position, leg.angle = (x + c * lx - s * ly, y + s * lx + c * ly), angle + la
    for p in list(env.particles):  # exhaust puffs belong to reality
        env.world.DestroyBody(p)
    env.particles = []


ADAPTERS = {"CartPole": _cartpole, "Pendulum": _pendulum, "Acrobot": _acrobot, "MountainCar": _mountaincar,
            "MountainCarContinuous": _mountaincar, "LunarLander": _lunarlander}


def family(env_id: str) -> str:
    """"CartPole-v1" -> "CartPole"; "worldssm/Pong64-v0" -> "Pong64"."""
    return env_id.split("/")[-1].split("-v")[0]


def scale_frame(frame: np.ndarray, height: int) -> np.ndarray:
    """A uint8 [H, W, 3] frame scaled by an integer factor to about `height` rows."""
    k = max(1, height // frame.shape[0])
    return np.kron(frame, np.ones((k, k, 1), np.uint8)) if k > 1 else frame


class StateView:
    """Draws observations of one env: `frame(obs)` -> uint8 [H, W, 3], or None (plot instead).

    Args:
        env_id: a Gymnasium id (or "swarm_v0", drawn by the app itself: None).
        image: the observations are uint8 frames.
        env_kwargs: the env's extra keyword arguments (the render copy takes the same).
    """

    def __init__(self, env_id: str, image: bool, env_kwargs: dict | None = None):
        self.image, self.adapter, self.env = image, None, None
        if image:
            return
        adapter = ADAPTERS.get(family(env_id))
        if adapter is None:
            return
        gym = require("gymnasium", "gymnasium>=1.0")
        self.env = gym.make(env_id, render_mode="rgb_array", **dict(env_kwargs or {}))
        self.adapter = adapter
        self.reset(0)

    @property
    def plots(self) -> bool:
        """True when observations are plotted (no picture of them can be made)."""
        return not self.image and self.adapter is None

    def reset(self, seed: int | None) -> None:
        """Reset the render copy with the real episode's seed (LunarLander's terrain follows it)."""
        if self.env is not None:
            self.env.reset(seed=seed)
            if hasattr(self.env.unwrapped, "_worldssm_legs"):
                del self.env.unwrapped._worldssm_legs

    def frame(self, obs: np.ndarray) -> np.ndarray | None:
        if self.image:
            return np.asarray(obs, np.uint8)
        if self.adapter is None:
            return None
        self.adapter(self.env.unwrapped, np.asarray(obs, np.float64).reshape(-1))
        return self.env.render()

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
