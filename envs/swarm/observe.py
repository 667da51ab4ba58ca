"""Egocentric observations of the swarm, for all agents at once.

Vector layout (float32 [D], every entry in [-1, 1]; R = sense_radius, v = max_speed):

| slice          | content                                                              |
|----------------|----------------------------------------------------------------------|
| 0:2            | own velocity / v                                                     |
| 2              | own energy / energy_max                                              |
| 3:7            | distance to the left, right, bottom, top wall / R, clipped to 1       |
| 7:10           | vector to the nearest obstacle surface / R, present flag (within R)  |
| 10:10+5k       | k nearest agents: dx/R, dy/R, dvx/2v, dvy/2v, present; nearest first |
| ...:+3kf       | kf nearest food: dx/R, dy/R, present; nearest first                  |

Images (uint8 [S, S, 3]) show the square of half-width R around the agent, north up: floor,
walls (outside the arena), obstacles, the same k agents and kf food items as the vector, and the
agent itself in the centre. Everything is rasterised with array indexing, no drawing calls.
"""

from __future__ import annotations

import numpy as np

from worldssm.envs.swarm.grid import as_complex

FLOOR = (24, 24, 32)
WALL = (110, 110, 110)
OBSTACLE = (150, 110, 70)
FOOD = (60, 210, 80)
OTHER = (70, 130, 255)
SELF = (255, 210, 40)


def nearest_obstacle(pos, centres, radii):
    """Vector from each position to the nearest obstacle surface and its length.

    Args:
        pos: float32 [Q, 2]; centres: float32 [O, 2]; radii: float32 [O].

    Returns:
        vec: float32 [Q, 2] (zeros when there is no obstacle), gap: float32 [Q] (inf if none).
    """
    nq = pos.shape[0]
    if centres.shape[0] == 0:
        return np.zeros((nq, 2), np.float32), np.full(nq, np.inf, np.float32)
    dx = centres[:, 0] - pos[:, 0:1]  # [Q, O]
    dy = centres[:, 1] - pos[:, 1:2]
    dist = np.sqrt(dx * dx + dy * dy)
    gap = dist - radii  # [Q, O]
    # Flat indices of each row's nearest obstacle, instead of four take_along_axis calls.
    o = gap.argmin(axis=1) + np.arange(0, nq * gap.shape[1], gap.shape[1])  # [Q]
    g = gap.ravel()[o]
    scale = g / np.maximum(dist.ravel()[o], 1e-6)
    vec = np.empty((nq, 2), np.float32)
    vec[:, 0] = dx.ravel()[o] * scale
    vec[:, 1] = dy.ravel()[o] * scale
    return vec, g


def vector_obs(cfg, self_pos, self_vel, self_energy, nbr_idx, nbr_pos, nbr_vel, food_idx,
               food_pos, centres, radii):
    """Vector observations for Q agents.

    Args:
        cfg: SwarmConfig.
        self_pos, self_vel: float32 [Q, 2]; self_energy: float32 [Q].
        nbr_idx: int64 [Q, k] rows of nbr_pos / nbr_vel, -1 for none.
        nbr_pos, nbr_vel: float32 [P, 2] agents present in the world.
        food_idx: int64 [Q, kf] rows of food_pos, -1 for none.
        food_pos: float32 [F, 2].
        centres, radii: obstacles.

    Returns:
        float32 [Q, D].
    """
    nq = self_pos.shape[0]
    inv_r = np.float32(1.0 / cfg.sense_radius)
    v = cfg.max_speed
    out = np.empty((nq, cfg.obs_dim), np.float32)
    out[:, 0:2] = self_vel * np.float32(1.0 / v)
    out[:, 2] = self_energy * np.float32(1.0 / cfg.energy_max)
    side = np.float32(cfg.side)
    out[:, 3] = self_pos[:, 0]
    out[:, 5] = self_pos[:, 1]
    out[:, 4] = side - self_pos[:, 0]
    out[:, 6] = side - self_pos[:, 1]
    out[:, 3:7] *= inv_r
    vec, gap = nearest_obstacle(self_pos, centres, radii)
    near = gap * inv_r < 1.0
    out[:, 7:9] = vec * (near * inv_r)[:, None]
    out[:, 9] = near
    k = cfg.k_agents
    a = out[:, 10:10 + 5 * k].reshape(nq, k, 5)
    _relative(a, nbr_idx, nbr_pos, self_pos, inv_r, nbr_vel, self_vel, np.float32(0.5 / v))
    kf = cfg.k_food
    f = out[:, 10 + 5 * k:].reshape(nq, kf, 3)
    _relative(f, food_idx, food_pos, self_pos, inv_r)
    np.clip(out, -1.0, 1.0, out=out)
    return out


def _relative(dst, idx, pos, self_pos, pos_scale, vel=None, self_vel=None, vel_scale=None):
    """Fill dst [Q, k, C] with scaled relative positions (and velocities) and a present flag."""
    have = idx >= 0  # [Q, k]
    dst[..., -1] = have
    if pos.shape[0] == 0:
        dst[..., :-1] = 0.0
        return
    j = np.where(have, idx, 0)
    pairs = [(pos, self_pos, pos_scale, 0)]
    if vel is not None:
        pairs.append((vel, self_vel, vel_scale, 2))
    for other, own, scale, c in pairs:
        # x + iy as complex64: one gather and one subtraction for both coordinates, each
        # component computed exactly as in float32.
        rel = as_complex(other)[j]  # [Q, k]
        rel -= as_complex(own)[:, None]
        w = have * scale  # [Q, k]
        np.multiply(rel.real, w, out=dst[..., c])
        np.multiply(rel.imag, w, out=dst[..., c + 1])


def _pixel_offsets(size: int, radius: float) -> np.ndarray:
    """World offsets of pixel centres relative to the agent, float32 [S*S, 2], row-major, north up."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) * (2 * radius / size) - radius
    xs, ys = np.meshgrid(centres, -centres)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def _stamp(img, rows, rel, radius, size, colour, half):
    """Paint (2*half+1)^2 squares at relative world positions `rel` [N, 2] into images `rows`."""
    scale = size / (2 * radius)
    px = np.floor((rel[:, 0] + radius) * scale).astype(np.int64)
    py = np.floor((radius - rel[:, 1]) * scale).astype(np.int64)
    for dy in range(-half, half + 1):
        for dx in range(-half, half + 1):
            x = px + dx
            y = py + dy
            ok = (x >= 0) & (x < size) & (y >= 0) & (y < size)
            img[rows[ok], y[ok], x[ok]] = colour


def image_obs(cfg, self_pos, nbr_idx, nbr_pos, food_idx, food_pos, centres, radii):
    """Egocentric RGB images for Q agents, uint8 [Q, S, S, 3] (arguments as in `vector_obs`)."""
    nq = self_pos.shape[0]
    s = cfg.image_size
    r = cfg.sense_radius
    world = self_pos[:, None, :] + _pixel_offsets(s, r)[None]  # [Q, S*S, 2]
    img = np.empty((nq, s * s, 3), np.uint8)
    img[:] = FLOOR
    outside = ((world < 0) | (world > cfg.side)).any(axis=2)  # [Q, S*S]
    img[outside] = WALL
    if centres.shape[0]:
        delta = centres[None] - self_pos[:, None]  # [Q, O, 2]
        gap = np.sqrt(np.einsum("qox,qox->qo", delta, delta)) - radii  # [Q, O]
        o = np.argmin(gap, axis=1)
        visible = gap[np.arange(nq), o] < r * 1.5
        q = np.nonzero(visible)[0]
        if q.size:
            d = world[q] - centres[o[q]][:, None, :]  # [V, S*S, 2]
            inside = np.einsum("vpx,vpx->vp", d, d) <= (radii[o[q]] ** 2)[:, None]
            sub = img[q]
            sub[inside] = OBSTACLE
            img[q] = sub
    img = img.reshape(nq, s, s, 3)
    half = 1 if s >= 24 else 0
    rows, cols = np.nonzero(food_idx >= 0)
    if rows.size:
        _stamp(img, rows, food_pos[food_idx[rows, cols]] - self_pos[rows], r, s, FOOD, 0)
    rows, cols = np.nonzero(nbr_idx >= 0)
    if rows.size:
        _stamp(img, rows, nbr_pos[nbr_idx[rows, cols]] - self_pos[rows], r, s, OTHER, half)
    _stamp(img, np.arange(nq), np.zeros((nq, 2), np.float32), r, s, SELF, half)
    return img
