"""Agent ids in a Simulation: int64 `owner << 32 | n`.

The owner is the EnvActor index for real agents and `DREAM_OWNER + j` for agents dreaming on
EngineActor j, so any id says where its agent lives without a lookup table.
"""

from __future__ import annotations

import numpy as np

OWNER_SHIFT = 32
DREAM_OWNER = 1 << 20


def owner_of(ids) -> np.ndarray:
    """The owner of each id, int64 [k]."""
    return np.asarray(ids, np.int64) >> OWNER_SHIFT


def agent_id(owner: int, n: int) -> int:
    """The id of the `n`-th agent minted by `owner`."""
    return (int(owner) << OWNER_SHIFT) | int(n)


def number_of(ids) -> np.ndarray:
    """The per-owner number of each id, int64 [k]."""
    return np.asarray(ids, np.int64) & ((1 << OWNER_SHIFT) - 1)
