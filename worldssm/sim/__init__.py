"""The simulation wing: EnvActors and EngineActors on Ray (or in this process), typed messages
between them, the roster of agents, and the Simulation that runs the tick loop.

Only `actors.py` and `ray_start.py` import Ray (the executors drive Ray handles they are given).
"""

from worldssm.errors import TickRejected
from worldssm.sim.config import BACKENDS, EXECUTORS, MODES, SimConfig
from worldssm.sim.roster import AgentRecord
from worldssm.sim.simulation import Simulation
from worldssm.sim.timing import TickResult


def start_ray(address=None, num_cpus=None, **kwargs):
    """Start or join Ray bound to loopback with token authentication (see `ray_start.start_ray`)."""
    from worldssm.sim.ray_start import start_ray as start

    return start(address, num_cpus, **kwargs)


__all__ = ["BACKENDS", "EXECUTORS", "MODES", "AgentRecord", "SimConfig", "Simulation", "TickRejected",
           "TickResult", "start_ray"]
