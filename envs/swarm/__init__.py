"""The built-in swarm world (`swarm_v0`): config, batched env, scripted policies."""

from worldssm.envs.swarm.config import DEBUG, SwarmConfig
from worldssm.envs.swarm.core import MOVES, SwarmEnv
from worldssm.envs.swarm.policies import POLICIES, GreedyFoodSeeker, RandomPolicy

__all__ = ["DEBUG", "MOVES", "POLICIES", "GreedyFoodSeeker", "RandomPolicy", "SwarmConfig",
           "SwarmEnv"]
