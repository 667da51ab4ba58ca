"""The engine: agents' states in a slab, stepped by a world model on one device.

`StateSlab` and `Engine` need only torch and numpy (no Ray, no envs, no data or training code);
the Simulation that drives engines from Ray actors is `worldssm.sim`.
"""

from worldssm.engine.engine import ENGINE_IMPLS, Engine, EngineInputError, EngineOutput
from worldssm.engine.state import SlabError, StateSlab

__all__ = ["ENGINE_IMPLS", "Engine", "EngineInputError", "EngineOutput", "SlabError", "StateSlab"]
