"""Agents: the `Agent` protocol (`act(obs [A, ...], info) -> actions [A, ...]`, batched over
agents) and the agents that ship with worldssm. `make_agent(name, action_space, env, seed)` is
where every caller gets one by name (`AGENTS`)."""

from worldssm.agents.base import Agent, AgentInfo, TickStream
from worldssm.agents.registry import AGENTS, ENV_FREE, make_agent
from worldssm.agents.scripted import GreedyAgent, PatternAgent, RandomAgent

__all__ = ["AGENTS", "ENV_FREE", "Agent", "AgentInfo", "GreedyAgent", "PatternAgent", "RandomAgent",
           "TickStream", "make_agent"]
