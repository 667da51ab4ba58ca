"""Ray actors: the shells of `shells.py` under `ray.remote` (the work is in the workers).

`tick` / `act` / `step_envs` / `act_and_step` are what a Compiled Graph binds; the other methods
are plain actor calls between ticks (setup, recovery), never while a graph is compiled. Ray's
own restarts are off (`max_restarts=0`): a restarted actor would rerun its constructor and lose
the model's states, so the Simulation restarts actors itself and restores them.
"""

from __future__ import annotations

from worldssm.errors import require
from worldssm.sim.shells import EngineShell, EnvShell

ray = require("ray", "ray[default]>=2.52")
from ray.dag import InputNode, MultiOutputNode  # noqa: E402 - the Compiled Graph's nodes (executors.py)


class EnvActor(EnvShell):
    """A batch of multi-agent envs and their agents (see `env_worker.EnvWorker`)."""


class EngineActor(EngineShell):
    """An Engine and its dreaming agents (see `engine_worker.EngineWorker`)."""


EnvActor = ray.remote(max_restarts=0, max_task_retries=0)(EnvActor)
EngineActor = ray.remote(max_restarts=0, max_task_retries=0)(EngineActor)

__all__ = ["EngineActor", "EnvActor", "InputNode", "MultiOutputNode"]
