"""Top-down rendering of the swarm: a numpy rasteriser, shown in a pygame window for "human".

pygame is imported only when a window is opened.
"""

from __future__ import annotations

import numpy as np

from worldssm.envs.swarm.observe import FLOOR, FOOD, OBSTACLE, SELF

HIGHLIGHT = (255, 60, 60)


def _disk_offsets(radius_px: float) -> np.ndarray:
    r = max(1, int(np.ceil(radius_px)))
    ys, xs = np.mgrid[-r:r + 1, -r:r + 1]
    keep = xs * xs + ys * ys <= max(radius_px, 0.75) ** 2
    return np.stack([ys[keep], xs[keep]], axis=1)  # [K, 2] (dy, dx)


def stamp_disks(frame, centres_px, radius_px, colours):
    """Paint disks at pixel centres [N, 2] (x, y) with colours uint8 [N, 3] or one colour."""
    size_y, size_x = frame.shape[:2]
    offs = _disk_offsets(radius_px)
    x = np.rint(centres_px[:, 0]).astype(np.int64)[:, None] + offs[:, 1]  # [N, K]
    y = np.rint(centres_px[:, 1]).astype(np.int64)[:, None] + offs[:, 0]
    ok = (x >= 0) & (x < size_x) & (y >= 0) & (y < size_y)
    colours = np.asarray(colours, np.uint8)
    if colours.ndim == 2:
        colours = np.broadcast_to(colours[:, None, :], (*x.shape, 3))[ok]
    frame[y[ok], x[ok]] = colours


class SwarmRenderer:
    """Draws a SwarmEnv: obstacles (cached background), food, agents coloured by energy.

    Args:
        env: the SwarmEnv; its config's render_size and highlight_agent are used.
    """

    def __init__(self, env):
        self.env = env
        self.size = env.cfg.render_size
        self.scale = self.size / env.cfg.side
        self.background = None
        self.window = None
        self.clock = None

    def reset_background(self):
        self.background = None

    def _background(self):
        if self.background is None:
            s = self.size
            frame = np.empty((s, s, 3), np.uint8)
            frame[:] = FLOOR
            ys, xs = np.mgrid[0:s, 0:s]
            wx = (xs + 0.5) / self.scale
            wy = (s - ys - 0.5) / self.scale
            for (cx, cy), r in zip(self.env.centres, self.env.radii):
                frame[(wx - cx) ** 2 + (wy - cy) ** 2 <= r * r] = OBSTACLE
            self.background = frame
        return self.background

    def to_px(self, pos):
        return np.stack([pos[:, 0] * self.scale, self.size - pos[:, 1] * self.scale], axis=1)

    def frame(self) -> np.ndarray:
        env = self.env
        cfg = env.cfg
        frame = self._background().copy()
        active = env.food_timer == 0
        stamp_disks(frame, self.to_px(env.food_pos[active]), cfg.food_radius * self.scale, FOOD)
        if env.num_agents:
            level = np.clip(env.energy / cfg.energy_max, 0, 1)[:, None]
            colours = (np.array([200, 60, 60]) * (1 - level) + np.array([70, 140, 255]) * level)
            radius = max(1.0, cfg.agent_radius * self.scale)
            centres = self.to_px(env.pos)
            stamp_disks(frame, centres, radius, colours.astype(np.uint8))
            hit = np.nonzero(env.ids == cfg.highlight_agent)[0]
            if hit.size:
                c = centres[hit]
                stamp_disks(frame, c, radius + 3, HIGHLIGHT)
                stamp_disks(frame, c, radius + 1, SELF)
        return frame

    def draw(self):
        frame = self.frame()
        if self.env.render_mode == "rgb_array":
            return frame
        from worldssm.errors import require

        pygame = require("pygame", "pygame>=2.5")
        if self.window is None:
            pygame.init()
            pygame.display.set_caption("worldssm swarm_v0")
            self.window = pygame.display.set_mode((self.size, self.size))
            self.clock = pygame.time.Clock()
        pygame.event.pump()
        pygame.surfarray.blit_array(self.window, frame.transpose(1, 0, 2))
        pygame.display.flip()
        self.clock.tick(self.env.metadata["render_fps"])
        return None

    def close(self):
        if self.window is not None:
            import pygame

            pygame.display.quit()
            self.window = None
