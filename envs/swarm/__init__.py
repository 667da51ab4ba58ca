"""The built-in swarm world (`swarm_v0`): config, batched env, steering rules."""

from worldssm.envs.swarm.config import DEBUG, SwarmConfig
from worldssm.envs.swarm.core import MOVES, SwarmEnv

__all__ = ["DEBUG", "MOVES", "SwarmConfig", "SwarmEnv"]
