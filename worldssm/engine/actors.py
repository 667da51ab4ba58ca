"""Ray actors: thin shells around `EnvWorker` and `EngineWorker` (the work is in workers.py).

Every argument and result is msgpack bytes or a plain int, so the only thing Ray pickles across
our interfaces is `bytes`. `tick` is the method a Compiled Graph binds; the other methods are
called as plain actor calls between ticks (setup, recovery), never while a graph is compiled.
Ray's own restarts are off (`max_restarts=0`): a restarted actor would rerun its constructor and
lose the model's states, so the Simulation restarts actors itself and restores them.
"""

from __future__ import annotations

from worldssm.engine.workers import EngineShell, EnvShell
from worldssm.errors import require

ray = require("ray", "ray[default]>=2.52")


class EnvActor(EnvShell):
    """A batch of multi-agent envs and their agents (see `workers.EnvWorker`)."""


class EngineActor(EngineShell):
    """An Engine and its dreaming agents (see `workers.EngineWorker`)."""


EnvActor = ray.remote(max_restarts=0, max_task_retries=0)(EnvActor)
EngineActor = ray.remote(max_restarts=0, max_task_retries=0)(EngineActor)
