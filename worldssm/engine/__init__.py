"""The engine: agents' states in a slab, stepped by a world model; Ray actors and the Simulation.

`StateSlab` and `Engine` need only torch; `Simulation`, `SimConfig` and `start_ray` live in
`worldssm.engine.simulation` (Ray is imported only there and in `worldssm.engine.actors`).
"""

from worldssm.engine.engine import Engine, EngineInputError, EngineOutput
from worldssm.engine.state import SlabError, StateSlab

__all__ = ["Engine", "EngineInputError", "EngineOutput", "SlabError", "StateSlab"]
