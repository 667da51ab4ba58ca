"""Adapters: Gymnasium ids as N agents, PettingZoo ParallelEnvs behind the batched API."""

from worldssm.envs.adapters.gym_agents import GymAgents
from worldssm.envs.adapters.pettingzoo_batched import BatchedFromParallel

__all__ = ["BatchedFromParallel", "GymAgents"]
