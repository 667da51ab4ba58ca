"""The swarm world as a `BatchedEnv`: every agent stepped with array operations.

State is one row per live agent, rows sorted by id (survivors keep their order, newcomers are
appended with larger ids). A tick:

1. check the actions (nothing changes on a bad one);
2. food whose respawn delay ran out reappears at a random free place;
3. thrust, drag, speed limit, move; walls and obstacles push agents back (a collision);
4. agent-agent collisions among each agent's k nearest agents of the previous tick, with the
   current positions: overlapping pairs are pushed apart (a collision);
5. each agent eats the nearest active food in reach; a food item contested by several agents goes
   to the nearest (ties: the lower row); eaten food disappears for `food_respawn_delay` ticks;
6. energy is spent; an agent at zero energy is terminated and leaves; at `max_steps` every agent
   is truncated;
7. missing agents spawn (fresh ids) with probability `spawn_prob` each, while ids remain;
8. observations of every row (final ones for leavers) and of newcomers, seen in the world of the
   agents present at the end of the tick.

See `worldssm.envs.api` for the batched contract this implements.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from worldssm.envs.api import BatchedEnv, LazyNames, check_box_actions, check_discrete_actions
from worldssm.envs.swarm.config import SwarmConfig
from worldssm.envs.swarm.grid import Grid, as_complex, grid_cells
from worldssm.envs.swarm.observe import image_obs, vector_obs

# Discrete actions: stay, up, down, left, right.
MOVES = np.array([[0, 0], [0, 1], [0, -1], [-1, 0], [1, 0]], np.float32)

STATE_FIELDS = ("ids", "pos", "vel", "energy", "knn", "food_pos", "food_timer", "centres",
                "radii")


class SwarmEnv(BatchedEnv):
    """The swarm world (`swarm_v0`) with the batched array API.

    Args:
        config: a SwarmConfig; keyword arguments override its fields.
        render_mode: None, "human" (pygame window) or "rgb_array" (uint8 [H, W, 3]).
    """

    metadata = {
        "render_modes": ["human", "rgb_array"],
        "render_fps": 30,
        "name": "swarm_v0",
        "is_parallelizable": True,
        "autoreset_mode": "Disabled",
    }

    def __init__(self, config: SwarmConfig | None = None, render_mode: str | None = None,
                 **overrides):
        cfg = config if config is not None else SwarmConfig()
        self.cfg = dataclasses.replace(cfg, **overrides) if overrides else cfg
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None")
        self.render_mode = render_mode
        self.max_agent_ids = self.cfg.id_budget
        self.rng = np.random.default_rng()
        self.t = 0
        self.next_id = 0
        self.agent_ids = np.zeros(0, np.int64)
        self._spaces = None
        self._renderer = None
        self._nearest_food = np.zeros(0, np.int64)
        # The grid over the food active at the start of the tick (see `_food_query`).
        self._food_grid = None
        self._food_active = np.zeros(0, np.int64)

    # ---- spaces and shapes (numpy-only callers use obs_shape / obs_dtype)

    @property
    def obs_shape(self) -> tuple:
        c = self.cfg
        return (c.obs_dim,) if c.obs_mode == "vector" else (c.image_size, c.image_size, 3)

    @property
    def obs_dtype(self):
        return np.float32 if self.cfg.obs_mode == "vector" else np.uint8

    def _make_spaces(self):
        from worldssm.errors import require

        spaces = require("gymnasium.spaces", "gymnasium>=1.0")
        c = self.cfg
        if c.obs_mode == "vector":
            obs = spaces.Box(-1.0, 1.0, self.obs_shape, np.float32)
        else:
            obs = spaces.Box(0, 255, self.obs_shape, np.uint8)
        if c.action_mode == "discrete":
            act = spaces.Discrete(len(MOVES))
        else:
            act = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._spaces = (obs, act)

    @property
    def single_observation_space(self):
        if self._spaces is None:
            self._make_spaces()
        return self._spaces[0]

    @property
    def single_action_space(self):
        if self._spaces is None:
            self._make_spaces()
        return self._spaces[1]

    # ---- state

    def state_dict(self) -> dict:
        """A deep copy of the full world state and random stream (for tests and snapshots)."""
        out = {f: getattr(self, f).copy() for f in STATE_FIELDS}
        out.update(t=self.t, next_id=self.next_id, rng=self.rng.bit_generator.state)
        return out

    def _free_positions(self, n: int) -> np.ndarray:
        """n uniform positions outside obstacles and walls, float32 [n, 2]."""
        c = self.cfg
        if n == 0:
            return np.zeros((0, 2), np.float32)
        lo, hi = c.agent_radius, c.side - c.agent_radius
        pos = self.rng.uniform(lo, hi, (n, 2)).astype(np.float32)
        for _ in range(32):
            d = pos[:, None, :] - self.centres[None]
            bad = (np.einsum("nox,nox->no", d, d) < (self.radii + c.agent_radius) ** 2).any(1)
            if not bad.any():
                break
            pos[bad] = self.rng.uniform(lo, hi, (int(bad.sum()), 2))
        return pos

    def reset(self, seed: int | None = None, options: dict | None = None):
        """Start an episode. `options` is accepted for API compatibility; none are defined."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        c = self.cfg
        self.t = 0
        n = c.n_agents
        side = c.side
        m = c.n_obstacles
        self.radii = self.rng.uniform(*c.obstacle_radius, m).astype(np.float32)
        self.centres = self.rng.uniform(0.15 * side, 0.85 * side, (m, 2)).astype(np.float32)
        self._obstacle_cells = self._obstacle_cell_map()
        self.ids = np.arange(n, dtype=np.int64)
        self.next_id = n
        self.pos = self._free_positions(n)
        self.vel = np.zeros((n, 2), np.float32)
        self.energy = np.full(n, c.energy_init, np.float32)
        self.food_pos = self._free_positions(c.n_food)
        self.food_timer = np.zeros(c.n_food, np.int64)
        grid = Grid(self.pos, c.sense_radius, side)
        self.knn, _ = grid.query(self.pos, c.k_agents, c.sense_radius, np.arange(n))
        food_idx, _ = self._food_query(self.pos)
        obs = self._observe(self.pos, self.vel, self.energy, self.knn, self.pos, self.vel,
                            food_idx)
        self.agent_ids = self.ids
        self._nearest_food = self._query_nearest_food
        if self._renderer is not None:
            self._renderer.reset_background()
        if self.render_mode == "human":
            self.render()
        return obs, {"agent_ids": self.ids.copy()}

    # ---- actions

    def check_actions(self, actions) -> np.ndarray:
        """Validate actions for the live agents; returns thrust float32 [A, 2]."""
        if self.num_agents == 0:
            raise ValueError("no live agents: the episode is over, call reset()")
        names = LazyNames(self.ids, self.agent_name)
        if self.cfg.action_mode == "discrete":
            return MOVES[check_discrete_actions(actions, names, len(MOVES))]
        thrust = check_box_actions(actions, names, (2,))
        return np.clip(thrust, -1.0, 1.0)

    # ---- the tick

    def _food_query(self, q, eaten=None):
        """k_food nearest active, uneaten food of each query, indices into food_pos.

        The grid over the active food stays in `self._food_grid` (with `self._food_active`), so
        the newcomers of the same tick are queried in it, minus the food eaten meanwhile.
        """
        c = self.cfg
        free = self.food_timer == 0
        active = np.flatnonzero(free if eaten is None else free & ~eaten)
        grid = Grid(self.food_pos[active], c.sense_radius, c.side)
        self._food_grid, self._food_active = grid, active
        idx, d2 = grid.query(q, c.k_food, c.sense_radius)
        return self._food_ids(idx), d2

    def _food_ids(self, idx):
        """Rows of the active-food grid [Q, k] -> indices into food_pos (-1 stays -1)."""
        # A -1 appended at index -1 maps "none" to itself: one gather.
        return np.append(self._food_active, -1)[idx]

    def _move(self, thrust):
        """Thrust, drag, speed limit and the three kinds of collision; returns pos, vel, hit."""
        c = self.cfg
        vel = self.vel * np.float32(1.0 - c.drag) + thrust * np.float32(c.accel)  # [A, 2]
        speed2 = vel[:, 0] * vel[:, 0] + vel[:, 1] * vel[:, 1]
        fast = speed2 > c.max_speed * c.max_speed
        if fast.any():
            vel[fast] *= (c.max_speed / np.sqrt(speed2[fast]))[:, None]
        pos = self.pos + vel
        lo, hi = c.agent_radius, c.side - c.agent_radius
        wall = (pos < lo) | (pos > hi)  # [A, 2]
        hit = wall[:, 0] | wall[:, 1]
        if hit.any():
            np.clip(pos, lo, hi, out=pos)
            vel[wall] = 0.0
        self._push_out_of_obstacles(pos, vel, hit)
        self._separate_agents(pos, hit)
        return pos, vel, hit

    def _obstacle_cell_map(self) -> np.ndarray:
        """bool [G] over the cells of `grid_cells(_, sense_radius, side)`: cells whose square
        comes within agent_radius of an obstacle (with a margin for float32 rounding).

        Edge cells reach to infinity, as `grid_cells` clamps positions outside into them.
        """
        c = self.cfg
        cs = float(c.sense_radius)
        n = max(1, int(np.ceil(c.side / cs)))
        lo = np.arange(n, dtype=np.float64) * cs  # [n] cell edges
        hi = lo + cs
        lo[0], hi[-1] = -np.inf, np.inf
        cx = self.centres[:, 0].astype(np.float64)  # [O]
        cy = self.centres[:, 1].astype(np.float64)
        gx = np.maximum(np.maximum(lo[:, None] - cx, cx - hi[:, None]), 0.0)  # [n, O]
        gy = np.maximum(np.maximum(lo[:, None] - cy, cy - hi[:, None]), 0.0)
        reach = self.radii.astype(np.float64) + c.agent_radius + 1e-2  # [O]
        near = (gy[:, None, :] ** 2 + gx[None, :, :] ** 2 < reach**2).any(axis=2)  # [y, x]
        cells = np.zeros((n + 2, n + 2), bool)
        cells[1:n + 1, 1:n + 1] = near
        return cells.ravel()

    def _push_out_of_obstacles(self, pos, vel, hit):
        """Move agents inside an obstacle to its surface and drop their inward velocity."""
        c = self.cfg
        if self.centres.shape[0] == 0:
            return
        if pos.shape[0] * self.centres.shape[0] <= 512:  # few pairs: test them all
            cand = None
            dx = pos[:, 0:1] - self.centres[:, 0]  # [A, O]
            dy = pos[:, 1:2] - self.centres[:, 1]
        else:
            # Only agents in cells that come near an obstacle can be inside one.
            cand = np.flatnonzero(self._obstacle_cells[grid_cells(pos, c.sense_radius, c.side)])
            if cand.size == 0:
                return
            dx = pos[cand, 0:1] - self.centres[:, 0]  # [A', O]
            dy = pos[cand, 1:2] - self.centres[:, 1]
        reach = self.radii + c.agent_radius
        inside = dx * dx + dy * dy < reach * reach  # [A', O]
        sub = np.nonzero(inside.any(axis=1))[0]
        if sub.size == 0:
            return
        rows = sub if cand is None else cand[sub]
        inside = inside[sub]
        dx, dy = dx[sub], dy[sub]
        dist = np.maximum(np.sqrt(dx * dx + dy * dy), 1e-6)
        nx, ny = dx / dist, dy / dist  # [R, O] outward normals
        depth = np.where(inside, reach - dist, 0.0)
        inward = np.minimum(vel[rows, 0:1] * nx + vel[rows, 1:2] * ny, 0.0) * inside
        pos[rows, 0] += (depth * nx).sum(axis=1)
        pos[rows, 1] += (depth * ny).sum(axis=1)
        vel[rows, 0] -= (inward * nx).sum(axis=1)
        vel[rows, 1] -= (inward * ny).sum(axis=1)
        hit[rows] = True

    def _separate_agents(self, pos, hit):
        """Push overlapping pairs apart; candidates are the k nearest of the previous tick."""
        c = self.cfg
        if self.knn.shape[1] == 0 or pos.shape[0] < 2:
            return
        have = self.knn >= 0  # [A, k]
        xy = as_complex(pos)  # [A] x + iy, exact float32 components
        # A -1 (no neighbour) fetches the last agent; `have` masks those pairs out below.
        delta = xy[:, None] - xy[self.knn]  # [A, k]
        dx, dy = delta.real, delta.imag
        d2 = dx * dx + dy * dy
        touch = have & (d2 < (2 * c.agent_radius) ** 2)
        rows = touch.any(axis=1).nonzero()[0]
        if rows.size == 0:
            return
        touch, dx, dy = touch[rows], dx[rows], dy[rows]
        dist = np.maximum(np.sqrt(d2[rows]), 1e-6)
        # Each agent of an overlapping pair moves half the overlap away from the other.
        push = np.where(touch, 0.5 * (2 * c.agent_radius - dist) / dist, 0.0)
        pos[rows, 0] += (push * dx).sum(axis=1)
        pos[rows, 1] += (push * dy).sum(axis=1)
        np.clip(pos, c.agent_radius, c.side - c.agent_radius, out=pos)
        hit[rows] = True

    def _eat(self, pos, food_idx, food_d2):
        """Resolve eating; returns food eaten per row [A] (0/1) and a mask of eaten food [F]."""
        c = self.cfg
        reach = (c.agent_radius + c.food_radius) ** 2
        rows = np.nonzero(food_d2[:, 0] <= reach)[0] if food_idx.shape[1] else np.zeros(0, int)
        got = np.zeros(pos.shape[0], np.float32)
        eaten = np.zeros(self.food_pos.shape[0], bool)
        if rows.size:
            f = food_idx[rows, 0]
            order = np.lexsort((rows, food_d2[rows, 0], f))
            f_sorted = f[order]
            first = np.ones(order.size, bool)
            first[1:] = f_sorted[1:] != f_sorted[:-1]
            winners = rows[order[first]]
            got[winners] = 1.0
            eaten[f_sorted[first]] = True
        return got, eaten

    def step(self, actions):
        """Advance one tick; see the module docstring and `worldssm.envs.api`."""
        thrust = self.check_actions(actions)  # [A, 2]
        c = self.cfg
        self.t += 1
        back = self.food_timer == 1
        self.food_timer = np.maximum(self.food_timer - 1, 0)
        if back.any():
            self.food_pos[back] = self._free_positions(int(back.sum()))
        pos, vel, hit = self._move(thrust)
        food_idx, food_d2 = self._food_query(pos)
        got, eaten = self._eat(pos, food_idx, food_d2)
        self.food_timer[eaten] = c.food_respawn_delay
        cost = c.energy_per_tick + c.energy_per_thrust * (thrust * thrust).sum(axis=1)
        energy = np.minimum(self.energy - cost + got * c.food_energy, c.energy_max)
        reward = (got * c.reward_food - hit * np.float32(c.collision_penalty)).astype(np.float32)
        terminated = energy <= 0.0
        truncated = ~terminated if self.t >= c.max_steps else np.zeros_like(terminated)
        if eaten.any():
            food_idx = self._mask_eaten(food_idx, food_d2, eaten)
        return self._finish(pos, vel, energy, food_idx, reward, terminated, truncated, eaten)

    def _mask_eaten(self, food_idx, food_d2, eaten):
        """Drop food eaten this tick from the rows' food lists, keeping them nearest first."""
        # An extra False at index -1 lets the -1 entries (no food) index it directly.
        gone = np.append(eaten, False)[food_idx]  # [A, kf]
        rows = np.nonzero(gone.any(axis=1))[0]
        sub_gone = gone[rows]
        d2 = np.where(sub_gone, np.inf, food_d2[rows])
        order = d2.argsort(axis=1, kind="stable")
        food_idx = food_idx.copy()
        food_idx[rows] = np.take_along_axis(np.where(sub_gone, -1, food_idx[rows]), order, 1)
        return food_idx

    def _finish(self, pos, vel, energy, food_idx, reward, terminated, truncated, eaten):
        """Removals, spawns, observations, and the new live state."""
        c = self.cfg
        rows_ids = self.ids
        n_rows = rows_ids.shape[0]
        n_keep = n_rows - int(terminated.sum())
        missing = c.n_agents - n_keep
        budget = self.max_agent_ids - self.next_id
        n_new = 0
        if missing > 0 and budget > 0 and not truncated.any():
            n_new = min(budget, int(self.rng.binomial(missing, c.spawn_prob)))
        new_ids = np.arange(self.next_id, self.next_id + n_new, dtype=np.int64)
        self.next_id += n_new
        new_pos = self._free_positions(n_new)
        # Queries: every row (final observations for leavers) then newcomers; the world at the
        # end of the tick is the rows `live` of them: survivors then newcomers.
        same = n_keep == n_rows and n_new == 0
        if same:
            q_pos, q_vel, q_energy = pos, vel, energy
            exclude = np.arange(n_rows)
        else:
            q_pos = np.concatenate([pos, new_pos])
            q_vel = np.concatenate([vel, np.zeros((n_new, 2), np.float32)])
            q_energy = np.concatenate([energy, np.full(n_new, c.energy_init, np.float32)])
            live = np.concatenate([(~terminated).nonzero()[0],
                                   np.arange(n_rows, n_rows + n_new)])  # [A' + J]
            # Each query skips itself: its row among the live agents, -1 for leavers.
            exclude = np.full(n_rows + n_new, -1, np.int64)
            exclude[live] = np.arange(live.shape[0])
        # Cell ids once for the queries; the live agents are a subset of them.
        q_cells = grid_cells(q_pos, c.sense_radius, c.side)  # [A + J]
        if same:
            live_pos, live_vel, live_energy, live_cells = q_pos, q_vel, q_energy, q_cells
        else:
            live_pos, live_vel, live_energy = q_pos[live], q_vel[live], q_energy[live]
            live_cells = q_cells[live]
        grid = Grid(live_pos, c.sense_radius, c.side, cells=live_cells)
        knn, _ = grid.query(q_pos, c.k_agents, c.sense_radius, exclude, q_cells=q_cells,
                            need_d2=False)
        if n_new:
            # This tick's food grid (active food at its start) minus what was eaten since:
            # the same answer as a fresh grid over the food active now.
            new_food, _ = self._food_grid.query(new_pos, c.k_food, c.sense_radius,
                                                point_mask=~eaten[self._food_active])
            food_idx = np.concatenate([food_idx, self._food_ids(new_food)])
        obs = self._observe(q_pos, q_vel, q_energy, knn, live_pos, live_vel, food_idx)
        self.pos, self.vel, self.energy = live_pos, live_vel, live_energy
        fd = self._query_nearest_food
        if same:
            self.knn, self._nearest_food = knn, fd
        else:
            self.ids = np.concatenate([rows_ids, new_ids])[live]
            self.knn = knn[live]
            self._nearest_food = fd[live]
        if truncated.any():
            for f in ("pos", "vel"):
                setattr(self, f, np.zeros((0, 2), np.float32))
            self.energy = np.zeros(0, np.float32)
            self.ids = np.zeros(0, np.int64)
            self.knn = self.knn[:0]
            self._nearest_food = self._nearest_food[:0]
        self.agent_ids = self.ids
        info = {"agent_ids": rows_ids, "spawned_ids": new_ids, "spawned_obs": obs[n_rows:],
                "energy": np.maximum(energy, 0.0), "tick": self.t}
        if self.render_mode == "human":
            self.render()
        return obs[:n_rows], reward, terminated, truncated, info

    def _observe(self, q_pos, q_vel, q_energy, knn, live_pos, live_vel, food_idx):
        c = self.cfg
        nq = q_pos.shape[0]
        self._query_nearest_food = food_idx[:, 0] if food_idx.shape[1] else np.full(nq, -1)
        if c.obs_mode == "vector":
            return vector_obs(c, q_pos, q_vel, q_energy, knn, live_pos, live_vel, food_idx,
                              self.food_pos, self.centres, self.radii)
        return image_obs(c, q_pos, knn, live_pos, food_idx, self.food_pos, self.centres,
                         self.radii)

    def nearest_food_vectors(self) -> np.ndarray:
        """Vector to the nearest visible food of each live agent, float32 [A, 2] (0: none).

        Rows follow `agent_ids`; used by the scripted policies in both observation modes.
        """
        near = self._nearest_food  # [A]
        have = (near >= 0)[:, None]
        vec = np.where(have, self.food_pos[np.maximum(near, 0)] - self.pos, 0.0)
        return vec.astype(np.float32)

    # ---- rendering

    def render(self):
        """Top-down frame: uint8 [H, W, 3] for "rgb_array", None (a window) for "human"."""
        if self.render_mode is None:
            return None
        if self._renderer is None:
            from worldssm.envs.swarm.render import SwarmRenderer

            self._renderer = SwarmRenderer(self)
        return self._renderer.draw()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
