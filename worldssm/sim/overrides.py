"""Actions given by the caller for some agents this tick ("overrides"): checking and applying.

The driver checks overrides before anything is sent, and each actor checks what reaches it
again (an actor trusts no message): a rejected override leaves every state as it was.
"""

from __future__ import annotations

import numpy as np

from worldssm.errors import TickRejected
from worldssm.spaces import SpaceError, check_batch


def check_overrides(ids: np.ndarray, actions, live: np.ndarray, space: dict, where: str) -> None:
    """Raise TickRejected unless every id in `ids` is live and `actions` [k, ...] fit `space`."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise TickRejected(f"{where}: agent ids must be a 1-D integer array")
    if not isinstance(actions, np.ndarray):
        raise TickRejected(f"{where}: actions must be a numpy array, got {type(actions).__name__}")
    unknown = ~np.isin(ids, live)
    if unknown.any():
        raise TickRejected(f"{where}: agent {int(ids[np.argmax(unknown)])} is not a live agent here")
    if np.unique(ids).size != ids.size:
        raise TickRejected(f"{where}: an agent is given two actions")
    try:
        check_batch(space, actions, ids.size)
    except SpaceError as exc:
        raise TickRejected(f"{where}: {exc}") from exc


def apply_overrides(actions: np.ndarray, row_ids: np.ndarray, ids: np.ndarray | None, given) -> np.ndarray:
    """`actions` [A, ...] for agents `row_ids` [A], with the rows named in `ids` replaced by
    `given` [k, ...] (ids not among `row_ids` are someone else's; None: no overrides). Returns a
    new array when any row changes, else `actions` itself."""
    if ids is None or ids.size == 0:
        return actions
    hit = np.isin(row_ids, ids)
    if not hit.any():
        return actions
    out = np.array(actions, copy=True)
    order = {int(g): i for i, g in enumerate(ids)}
    rows = np.flatnonzero(hit)
    out[rows] = given[[order[int(g)] for g in row_ids[rows]]].astype(out.dtype, copy=False)
    return out


def split_overrides(actions, space: dict) -> tuple[np.ndarray, np.ndarray]:
    """The caller's overrides as (ids int64 [k], actions [k, ...]).

    Args:
        actions: None, {agent id: action}, or (ids [k], actions [k, ...]).

    Raises:
        TickRejected: any other form, or ids and actions that do not line up.
    """
    dtype = np.int64 if space["type"] == "discrete" else np.float32
    shape = () if space["type"] == "discrete" else tuple(space["shape"])
    if actions is None or (isinstance(actions, dict) and not actions):
        return np.zeros(0, np.int64), np.zeros((0, *shape), dtype)
    if isinstance(actions, dict):
        try:
            ids = np.array(list(actions.keys()), dtype=np.int64)
            acts = np.stack([np.asarray(a) for a in actions.values()])
        except (TypeError, ValueError, OverflowError) as exc:
            raise TickRejected(f"actions: {exc}") from exc
        return ids, acts
    if isinstance(actions, tuple) and len(actions) == 2:
        ids, acts = np.asarray(actions[0]), actions[1]
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise TickRejected("actions: agent ids must be a 1-D integer array")
        if not isinstance(acts, np.ndarray) or acts.shape[:1] != ids.shape:
            raise TickRejected("actions: one action per agent id is needed")
        return ids.astype(np.int64), acts
    raise TickRejected("actions must be a dict {agent id: action} or (ids, actions)")
