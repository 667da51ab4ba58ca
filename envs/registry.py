"""`make(name, api=...)` and `names()`: one entry point for built-in and adapted envs.

A name is resolved in this order:

1. a built-in or `register`-ed name (`swarm_v0`);
2. `pettingzoo/<family>/<env>` (e.g. `pettingzoo/classic/rps_v2`): the PettingZoo module's
   `parallel_env(**kwargs)`; `api="parallel"` returns it as is, `api="batched"` wraps it in
   `BatchedFromParallel`;
3. any id in Gymnasium's registry (e.g. `CartPole-v1`): `GymAgents(id, n_agents=..., autoreset=...)`,
   N copies as N agents; by default a copy whose episode ends restarts as a new agent, so the
   population goes on as swarm_v0's does (`autoreset="off"`: N one-episode agents).

`n_agents` is accepted by every name: the agents at reset for built-ins and Gymnasium ids; a
PettingZoo env fixes its own agents, so there it must equal the env's number (or be None).
"""

from __future__ import annotations

import importlib

from worldssm.errors import EnvError, require

APIS = ("parallel", "batched")
ENVS_EXTRA = "worldssm[envs]"  # the extra that brings the Gymnasium envs' own dependencies
PETTINGZOO_PREFIX = "pettingzoo/"
# PettingZoo envs with a parallel_env that need no extra download beyond pettingzoo itself and
# their family's pure-python dependencies; others are reachable by the same prefix.
PETTINGZOO_KNOWN = (
    "pettingzoo/butterfly/cooperative_pong_v6",
    "pettingzoo/butterfly/knights_archers_zombies_v11",
    "pettingzoo/classic/rps_v2",
)

_BUILTIN = {}


def register(name: str, factory) -> None:
    """Register `factory(**kwargs) -> BatchedEnv` under `name` for `make`.

    Raises:
        ValueError: the name is taken or uses the reserved `pettingzoo/` prefix.
    """
    if name in _BUILTIN or name.startswith(PETTINGZOO_PREFIX):
        raise ValueError(f"env name {name!r} is already registered or reserved")
    _BUILTIN[name] = factory


def _swarm(**kwargs):
    from worldssm.envs.swarm.core import SwarmEnv

    return SwarmEnv(**kwargs)


register("swarm_v0", _swarm)


def names(include_gymnasium: bool = False) -> list[str]:
    """Names `make` accepts: built-ins, then known PettingZoo envs, then (optionally) every
    Gymnasium id registered now (any of which `make` adapts as N agents)."""
    out = sorted(_BUILTIN) + list(PETTINGZOO_KNOWN)
    if include_gymnasium:
        gym = require("gymnasium", "gymnasium>=1.0")
        out += sorted(gym.registry)
    return out


KINDS = ("builtin", "pettingzoo", "gymnasium")


def kind_of(name: str) -> str:
    """Which kind of env `make` would build for `name`: "builtin" (registered here),
    "pettingzoo" (its own fixed agents) or "gymnasium" (N copies as N agents). Does not check
    that a Gymnasium id exists (`make` does)."""
    if name in _BUILTIN:
        return "builtin"
    if name.startswith(PETTINGZOO_PREFIX):
        return "pettingzoo"
    return "gymnasium"


def _pettingzoo_parallel(name: str, kwargs: dict):
    require("pettingzoo", "pettingzoo>=1.24")
    path = name[len(PETTINGZOO_PREFIX):].split("/")
    if len(path) != 2 or not all(path):
        raise EnvError(f"{name!r}: expected pettingzoo/<family>/<env>, e.g. pettingzoo/classic/rps_v2")
    module_name = f"pettingzoo.{path[0]}.{path[1]}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise EnvError(f"{name!r}: no PettingZoo module {module_name}") from exc
        # The env exists but one of its own dependencies is missing.
        require(exc.name or module_name, f"pettingzoo[{path[0]}]")
        raise
    if not hasattr(module, "parallel_env"):
        raise EnvError(f"{name!r}: {module_name} has no parallel_env")
    try:
        return module.parallel_env(**kwargs)
    except TypeError as exc:
        raise EnvError(f"{name!r} does not take these arguments: {exc}") from exc


def make(name: str, api: str = "parallel", n_agents: int | None = None, **kwargs):
    """Create an env by name with the PettingZoo Parallel API or the batched array API.

    Args:
        name: see the module docstring (`names()` lists the known ones).
        api: "parallel" (PettingZoo ParallelEnv) or "batched" (`worldssm.envs.api.BatchedEnv`).
        n_agents: agents at reset; None: the env's default (1 copy of a Gymnasium env).
        **kwargs: passed to the env (SwarmConfig fields and render_mode for swarm_v0;
            autoreset, max_agent_ids, render_mode and env kwargs for Gymnasium ids;
            parallel_env kwargs for PettingZoo).

    Raises:
        EnvError (a ValueError): unknown name, an n_agents the env cannot have, or kwargs it
            rejects.
        ValueError: unknown api.
        MissingDependencyError: pettingzoo (or an env's own dependency: Box2D, MuJoCo, ale-py)
            is not installed; the message names the extra to install.
    """
    if api not in APIS:
        raise ValueError(f"api must be one of {APIS}, got {api!r}")
    if n_agents is not None and (isinstance(n_agents, bool) or not isinstance(n_agents, int) or n_agents < 1):
        raise EnvError(f"n_agents must be a positive int or None, got {n_agents!r}")
    if name in _BUILTIN:
        if n_agents is not None:
            kwargs["n_agents"] = n_agents
        try:
            batched = _BUILTIN[name](**kwargs)
        except TypeError as exc:
            raise EnvError(f"{name!r} does not take these arguments: {exc}") from exc
    elif name.startswith(PETTINGZOO_PREFIX):
        par = _pettingzoo_parallel(name, kwargs)
        fixed = len(par.possible_agents)
        if n_agents is not None and n_agents != fixed:
            par.close()
            raise EnvError(f"{name!r} fixes its own agents ({fixed} of them); n_agents={n_agents} "
                             "cannot be honoured (leave it out)")
        if api == "parallel":
            return par
        from worldssm.envs.adapters.pettingzoo_batched import BatchedFromParallel

        return BatchedFromParallel(par)
    else:
        gym = require("gymnasium", "gymnasium>=1.0")
        if name not in gym.registry:
            raise EnvError(
                f"unknown env {name!r}: not one of {names()} and not a registered Gymnasium id"
            )
        from worldssm.envs.adapters.gym_agents import GymAgents

        try:
            batched = GymAgents(name, n_agents=1 if n_agents is None else n_agents, **kwargs)
        except TypeError as exc:
            raise EnvError(f"{name!r} does not take these arguments: {exc}") from exc
        except (ImportError, gym.error.DependencyNotInstalled) as exc:
            from worldssm.errors import MissingDependencyError

            raise MissingDependencyError(f"{name} needs a package that is not installed ({exc}); "
                                         f"install it with: pip install '{ENVS_EXTRA}'") from exc
    if api == "batched":
        return batched
    from worldssm.envs.parallel import ParallelFromBatched

    return ParallelFromBatched(batched)
