"""Agents by name: the one place every caller (collect, the Simulation's actors, the CLI) gets
its agents from.

A name is one of `AGENTS` (scripted agents that ship with worldssm), `PLANNER` (MPPI or
categorical CEM over the engine's model: only an EngineActor, which holds the states, can make
one, with `make_planner`), or an import path "package.module:Name" of a user's agent class (or
factory). A user's agent is built with whichever of `action_space`, `seed` and `env` its
signature takes, plus the keyword arguments given for it:

    class Greedy:                                   # mypkg/agents.py
        def __init__(self, action_space, seed=0, speed=1.0): ...
        def act(self, obs, info): ...               # obs [A, ...] -> actions [A, ...]

    SimConfig(agents={"planner": 8, "mypkg.agents:Greedy": 100},
              agent_kwargs={"mypkg.agents:Greedy": {"speed": 2.0}})
"""

from __future__ import annotations

import importlib
import inspect
import re

from worldssm.agents.scripted import GreedyAgent, PatternAgent, RandomAgent
from worldssm.errors import AgentError, WorldssmError

AGENTS = ("random", "pattern", "greedy")
# Agents that read only observations and info, so they can also act for dream agents.
ENV_FREE = ("random", "pattern")
PLANNER = "planner"
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_import_path(name: str) -> bool:
    return bool(_IMPORT_PATH.match(name))


def check_name(name: str, what: str = "agent") -> None:
    """ValueError unless `name` is a known agent, the planner or looks like an import path (whether
    the path resolves is `resolve`'s question)."""
    if not isinstance(name, str) or not (name in AGENTS or name == PLANNER or is_import_path(name)):
        raise ValueError(f"{what} must be one of {AGENTS + (PLANNER,)} or an import path "
                         f"'package.module:Name', got {name!r}")


def resolve(name: str):
    """The class or factory an import path "package.module:Name" names.

    Raises:
        WorldssmError: the module cannot be imported, has no such attribute, or it is not callable
            (the path and the reason are named).
    """
    module_name, _, attr = name.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure to import is the user's to see, named
        raise WorldssmError(f"agent {name!r}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise WorldssmError(f"agent {name!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise WorldssmError(f"agent {name!r}: {attr!r} is not a class or factory")
    return obj


def _parameters(factory):
    """(the factory's parameters, or None where its signature cannot be read; whether it takes
    **kwargs)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None, False
    return params, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def check_import_path(name: str, kwargs: dict | None = None) -> None:
    """WorldssmError, naming `name`, unless the import path resolves and its signature takes
    `kwargs` (plus whichever of action_space, seed and env it names): the check a Simulation makes
    before any actor starts."""
    params, takes_all = _parameters(resolve(name))
    if params is None or takes_all:
        return  # a builtin or C factory, or one that takes **kwargs: only building it can tell
    unknown = sorted(set(kwargs or {}) - set(params))
    if unknown:
        raise WorldssmError(f"agent {name!r} got unexpected keyword arguments {unknown}; it takes {sorted(params)}")
    given = {"action_space", "seed", "env"} | set(kwargs or {})
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in given
               and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    if missing:
        raise WorldssmError(f"agent {name!r} needs arguments {missing}; give them in agent_kwargs")


def make_agent(name: str, action_space: dict, env=None, seed: int = 0, kwargs: dict | None = None):
    """The agent called `name` for actions in `action_space` (a SPACE dict).

    Args:
        name: one of `AGENTS`, or an import path "package.module:Name" (see the module docstring).
        action_space: SPACE dict of the actions.
        env: the batched env the agent's rows live in (needed by "greedy"; None for dream agents).
        seed: seed of the agent's random stream.
        kwargs: keyword arguments for the agent (import paths only).

    Raises:
        AgentError (a ValueError): unknown name, the planner (see `make_planner`), keyword
            arguments for a built-in agent, or an agent that cannot act in `env` (or needs one).
        WorldssmError: an import path that does not resolve, or whose agent cannot be built with
            these arguments.
    """
    kwargs = dict(kwargs or {})
    if is_import_path(name):
        factory = resolve(name)
        params, takes_all = _parameters(factory)
        given = {"action_space": action_space, "seed": seed, "env": env}
        args = {k: v for k, v in given.items() if takes_all or k in (params or {})}
        try:
            agent = factory(**args, **kwargs)
        except TypeError as exc:
            raise WorldssmError(f"agent {name!r} cannot be built with {sorted(args) + sorted(kwargs)}: {exc}") from None
        if not callable(getattr(agent, "act", None)):
            raise WorldssmError(f"agent {name!r} built an object without an act(obs, info) method")
        return agent
    if kwargs:
        raise AgentError(f"agent {name!r} takes no keyword arguments, got {sorted(kwargs)}")
    if name == "random":
        return RandomAgent(action_space, seed)
    if name == "pattern":
        return PatternAgent(action_space, seed)
    if name == "greedy":
        if env is None:
            raise AgentError("the greedy agent reads a real swarm_v0 env; dream agents have none "
                             f"(choose one of {ENV_FREE} for them)")
        return GreedyAgent(env, seed)
    if name == PLANNER:
        raise AgentError("a planner imagines with an engine's states: make it with "
                         "worldssm.agents.planners.make_planner(engine)")
    raise AgentError(f"unknown agent {name!r}; choose one of {AGENTS} or give an import path 'package.module:Name'")
