"""Agents by name: the one place every caller (collect, the Simulation's actors, the CLI) gets
its agents from."""

from __future__ import annotations

from worldssm.agents.scripted import GreedyAgent, PatternAgent, RandomAgent

AGENTS = ("random", "pattern", "greedy")
# Agents that read only observations and info, so they can also act for dream agents.
ENV_FREE = ("random", "pattern")


def make_agent(name: str, action_space: dict, env=None, seed: int = 0):
    """The agent called `name` for actions in `action_space` (a SPACE dict).

    Args:
        name: one of `AGENTS`.
        action_space: SPACE dict of the actions.
        env: the batched env the agent's rows live in (needed by "greedy"; None for dream agents).
        seed: seed of the agent's random stream.

    Raises:
        ValueError: unknown name, or an agent that needs an env it was not given.
    """
    if name == "random":
        return RandomAgent(action_space, seed)
    if name == "pattern":
        return PatternAgent(action_space, seed)
    if name == "greedy":
        if env is None:
            raise ValueError("the greedy agent reads a real swarm_v0 env; dream agents have none "
                             f"(choose one of {ENV_FREE} for them)")
        return GreedyAgent(env, seed)
    raise ValueError(f"unknown agent {name!r}; choose one of {AGENTS}")
