"""worldssm: an agentic world-model engine for real-time simulated environments.

`import worldssm as ws` gives the public API of `worldssm.api` (`ws.load`, `ws.Engine`,
`ws.DreamVectorEnv`, `ws.make_planner`, `ws.Simulation`, ...), imported on first use so that
`import worldssm` alone stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# The names of worldssm.api.__all__ (a test keeps the two equal). Only these import the API:
# `from worldssm import codec` also asks this module for an attribute before it imports the
# submodule, and must not pull in torch and gymnasium.
API = frozenset({
    "PLANNER_PRESETS", "Agent", "AgentInfo", "CEMPlanner", "Contexts", "DreamEnv", "DreamParallelEnv",
    "DreamValueConfig", "DreamVectorEnv", "Engine", "EngineOutput", "EnsembleEngine", "EpisodeResult", "GreedyAgent", "MPPIPlanner", "ModelSource",
    "PatternAgent", "PlannerConfig", "PlannerError", "RandomAgent", "SimConfig", "Simulation", "WorldModel",
    "TrainConfig", "Value", "ValueConfig", "WorldModelConfig", "WorldssmError", "collect", "fit_value",
    "fit_value_in_dreams", "load", "load_value", "make_env", "make_planner", "open_play", "plan_in_env", "preset", "run_episodes", "train_model",
})

if TYPE_CHECKING:  # type checkers and IDEs see the names; at run time they resolve on first use
    from worldssm.api import *  # noqa: F403


def __getattr__(name: str):
    if name in API:
        return getattr(importlib.import_module("worldssm.api"), name)
    raise AttributeError(f"module 'worldssm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | API)
