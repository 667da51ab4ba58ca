"""Configuration of the swarm world (`swarm_v0`)."""

from __future__ import annotations

import dataclasses
import math

ACTION_MODES = ("discrete", "continuous")
OBS_MODES = ("vector", "image")


@dataclasses.dataclass(frozen=True)
class SwarmConfig:
    """Every knob of the swarm world; all lengths are in arena units, times in ticks."""

    n_agents: int = 64
    """Agents at reset; the population is refilled towards this number by spawning."""
    max_agent_ids: int | None = None
    """Ids available per episode (no spawning once spent); None: 4 * n_agents + 64."""
    max_steps: int = 500
    """Ticks per episode; at this tick every live agent is truncated."""
    arena_size: float | None = None
    """Side of the square arena; None: sqrt(n_agents / agent_density), at least 24."""
    agent_density: float = 0.02
    """Agents per unit area, used when arena_size is None."""
    food_per_agent: float = 0.5
    """Food items per agent at reset (at least 4)."""
    n_obstacles: int = 8
    """Static circular obstacles."""
    obstacle_radius: tuple[float, float] = (1.5, 4.0)
    """Range of obstacle radii."""
    agent_radius: float = 0.5
    """Agent body radius; two agents closer than twice this collide."""
    food_radius: float = 0.3
    """An agent eats food whose centre is within agent_radius + food_radius."""
    sense_radius: float = 6.0
    """Range of the egocentric observation (and the spatial grid's cell size)."""
    k_agents: int = 8
    """Nearest agents in the vector observation (and the collision candidates)."""
    k_food: int = 8
    """Nearest food items in the vector observation."""
    max_speed: float = 1.0
    """Speed limit per tick."""
    accel: float = 0.5
    """Velocity change per tick at full thrust."""
    drag: float = 0.1
    """Fraction of velocity lost per tick."""
    energy_init: float = 1.0
    """Energy of a new agent."""
    energy_max: float = 2.0
    """Energy cap."""
    energy_per_tick: float = 0.004
    """Energy spent every tick."""
    energy_per_thrust: float = 0.004
    """Extra energy per tick times the squared thrust magnitude."""
    food_energy: float = 0.35
    """Energy gained per food item."""
    food_respawn_delay: int = 20
    """Ticks before eaten food reappears at a random free place."""
    reward_food: float = 1.0
    """Reward per food item eaten."""
    collision_penalty: float = 0.1
    """Penalty per tick with a collision (agent, obstacle or wall)."""
    spawn_prob: float = 0.05
    """Per tick, each missing agent (below n_agents) spawns with this probability."""
    action_mode: str = "discrete"
    """'discrete' (0 stay, 1 up, 2 down, 3 left, 4 right) or 'continuous' (2D thrust in [-1, 1])."""
    obs_mode: str = "vector"
    """'vector' (float32 [D]) or 'image' (uint8 egocentric RGB [S, S, 3])."""
    image_size: int = 32
    """Side S of egocentric images in pixels."""
    render_size: int = 512
    """Side of the rendered top-down frame in pixels."""
    highlight_agent: int | None = None
    """Agent id drawn with a ring in renders (None: no highlight)."""

    def __post_init__(self):
        if self.n_agents < 1:
            raise ValueError(f"n_agents must be >= 1, got {self.n_agents}")
        if self.max_agent_ids is not None and self.max_agent_ids < self.n_agents:
            raise ValueError(
                f"max_agent_ids ({self.max_agent_ids}) must be >= n_agents ({self.n_agents})"
            )
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {self.action_mode!r}")
        if self.obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {self.obs_mode!r}")
        for name in ("sense_radius", "agent_radius", "max_speed", "agent_density", "energy_max"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.k_agents < 0 or self.k_food < 0:
            raise ValueError("k_agents and k_food must be >= 0")
        if not 0.0 <= self.spawn_prob <= 1.0:
            raise ValueError(f"spawn_prob must be in [0, 1], got {self.spawn_prob}")
        if self.image_size < 8 or self.render_size < 32:
            raise ValueError("image_size must be >= 8 and render_size >= 32")
        if self.food_respawn_delay < 1:
            raise ValueError("food_respawn_delay must be >= 1")
        if self.arena_size is not None and self.arena_size < 4 * self.sense_radius:
            raise ValueError(f"arena_size must be >= 4 * sense_radius, got {self.arena_size}")

    @property
    def id_budget(self) -> int:
        return self.max_agent_ids if self.max_agent_ids is not None else 4 * self.n_agents + 64

    @property
    def side(self) -> float:
        if self.arena_size is not None:
            return float(self.arena_size)
        return max(24.0, math.sqrt(self.n_agents / self.agent_density))

    @property
    def n_food(self) -> int:
        return max(4, int(round(self.food_per_agent * self.n_agents)))

    @property
    def obs_dim(self) -> int:
        """Length D of the vector observation (see `swarm.observe`)."""
        return 3 + 4 + 3 + 5 * self.k_agents + 3 * self.k_food


DEBUG = SwarmConfig(n_agents=8, max_steps=50)
