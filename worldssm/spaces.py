"""SPACE dicts: the plain-data description of an observation or action space.

Every layer speaks of spaces in this one form (rollout headers, checkpoints, engine, actors'
messages), so no layer needs gymnasium to know a shape::

    {"type": "box", "shape": [...], "dtype": str, "low": array, "high": array}
    {"type": "discrete", "n": int}

`space_to_dict` / `space_from_dict` convert to and from gymnasium (imported only there);
`check_space_dict` validates a dict read from a file or a message; `space_step_layout` gives the
(shape, dtype) one step's value is stored in; `spaces_differ` names the first differing field;
`check_batch` validates a batch of actions against a space; `sample_batch` draws a batch of
values (what random agents act and `Engine.warm` feeds its captures) without gymnasium.

This module is a leaf: numpy and the codec only (gymnasium inside the two converters).
"""

from __future__ import annotations

import reprlib
from typing import Any

import numpy as np

from worldssm import codec
from worldssm.errors import WorldssmError

BOX_FIELDS = ("type", "shape", "dtype", "low", "high")
DISCRETE_FIELDS = ("type", "n")


class SpaceError(WorldssmError, ValueError):
    """Values do not fit a space, or a SPACE dict is malformed."""


def space_to_dict(space) -> dict:
    """Describe a gymnasium Box or Discrete space as a SPACE dict.

    Raises:
        WorldssmError: any other space type, or a Discrete with a nonzero start.
    """
    import gymnasium

    if isinstance(space, gymnasium.spaces.Box):
        codec.dtype_code(space.dtype)  # raises for dtypes the codec cannot store
        return {
            "type": "box",
            "shape": list(space.shape),
            "dtype": np.dtype(space.dtype).name,
            "low": np.asarray(space.low, dtype=space.dtype),
            "high": np.asarray(space.high, dtype=space.dtype),
        }
    if isinstance(space, gymnasium.spaces.Discrete):
        if int(space.start) != 0:
            raise WorldssmError(f"Discrete spaces with start={space.start} are not supported")
        return {"type": "discrete", "n": int(space.n)}
    raise WorldssmError(
        f"unsupported space {space!r}: worldssm supports only Box and Discrete spaces"
    )


def space_from_dict(d: dict):
    """Rebuild the gymnasium space described by a SPACE dict (see `space_to_dict`)."""
    import gymnasium

    check_space_dict(d)
    if d["type"] == "box":
        return gymnasium.spaces.Box(
            low=d["low"], high=d["high"], shape=tuple(d["shape"]), dtype=np.dtype(d["dtype"])
        )
    return gymnasium.spaces.Discrete(int(d["n"]))


def check_space_dict(d: Any) -> None:
    """Raise SpaceError unless `d` is a well-formed SPACE dict (it may come from a damaged file,
    so every field's type is checked and messages show values shortened)."""
    if not isinstance(d, dict) or not isinstance(d.get("type"), str) or d["type"] not in ("box", "discrete"):
        raise SpaceError(f"space must be a dict with type 'box' or 'discrete', got {reprlib.repr(d)}")
    fields = BOX_FIELDS if d["type"] == "box" else DISCRETE_FIELDS
    if set(d) != set(fields):
        raise SpaceError(f"{d['type']} space must have exactly the fields {list(fields)}")
    if d["type"] == "discrete":
        if not isinstance(d["n"], int) or isinstance(d["n"], bool) or d["n"] < 1:
            raise SpaceError(f"discrete space needs a positive int n, got {reprlib.repr(d['n'])}")
        return
    shape = d["shape"]
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise SpaceError(f"box shape must be a list of non-negative ints, got {reprlib.repr(shape)}")
    # Names only: np.dtype parses other strings with its own grammar (",", "(9**99,)f4" raise
    # SyntaxError and ValueError), and space_to_dict writes the name.
    if not isinstance(d["dtype"], str) or d["dtype"] not in codec.DTYPE_CODES:
        raise SpaceError(f"box dtype must be one of {', '.join(codec.DTYPE_CODES)}, got {reprlib.repr(d['dtype'])}")
    for bound in ("low", "high"):
        arr = d[bound]
        if not isinstance(arr, np.ndarray) or list(arr.shape) != shape:
            raise SpaceError(f"box {bound} must be an array of shape {shape}")
        if arr.dtype != np.dtype(d["dtype"]):
            raise SpaceError(f"box {bound} has dtype {arr.dtype}, expected {d['dtype']}")


def space_step_layout(d: dict) -> tuple[tuple[int, ...], np.dtype]:
    """Per-step (shape, dtype) of a space's values: Box -> its own, Discrete -> ((), int64)."""
    if d["type"] == "box":
        return tuple(d["shape"]), np.dtype(d["dtype"])
    return (), np.dtype(np.int64)


def sample_batch(d: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` values of a SPACE dict: Discrete -> int64 [n] uniform over its n values; Box -> [n,
    *shape] in its dtype, uniform where both bounds are finite, standard normal where not."""
    if d["type"] == "discrete":
        return rng.integers(0, int(d["n"]), n, dtype=np.int64)
    low = np.asarray(d["low"], np.float64)
    high = np.asarray(d["high"], np.float64)
    finite = np.isfinite(low) & np.isfinite(high)
    u = rng.uniform(0.0, 1.0, (n, *low.shape))
    x = np.where(finite, low + u * (np.where(finite, high, 1) - np.where(finite, low, 0)),
                 rng.standard_normal((n, *low.shape)))
    return x.astype(np.dtype(d["dtype"]))


def spaces_differ(a: dict, b: dict) -> str | None:
    """Name the first field in which two SPACE dicts differ, or None if they are equal."""
    if a["type"] != b["type"]:
        return "type"
    for key in BOX_FIELDS if a["type"] == "box" else DISCRETE_FIELDS:
        x, y = a[key], b[key]
        if isinstance(x, np.ndarray):
            same = x.shape == y.shape and np.array_equal(x, y, equal_nan=x.dtype.kind == "f")
        else:
            same = x == y
        if not same:
            return key
    return None


def require_same_spaces(env: str, obs_space: dict, action_space: dict, model, where: str = "", hint: str = "") -> None:
    """WorldssmError unless an env's SPACE dicts are those of `model` (anything with `obs_space`
    and `action_space`): the message names the env, which space, the field and both values
    (`where`: where the model came from; `hint`: what to do)."""
    for what, mine, own in (("observation", obs_space, model.obs_space), ("action", action_space, model.action_space)):
        field = spaces_differ(mine, own)
        if field is not None:
            values = f" ({reprlib.repr(mine.get(field))} against {reprlib.repr(own.get(field))})"
            raise WorldssmError(f"{env}'s {what} space differs from the model's{f' ({where})' if where else ''} "
                                f"in {field}{values}" + (f"; {hint}" if hint else ""))


def check_batch(space: dict, values: np.ndarray, batch: int, what: str = "actions") -> None:
    """Raise SpaceError unless `values` [batch, ...] is one valid value of `space` per row.

    Discrete: integer dtype, shape [batch], every value in [0, n). Box: floating dtype, shape
    [batch, *shape], every value finite in float32 (the dtype the model computes in: a finite
    float64 such as 1e39 becomes infinite there). The message names the first bad row.
    """
    if not isinstance(values, np.ndarray):
        raise SpaceError(f"{what} must be a numpy array, got {type(values).__name__}")
    if space["type"] == "discrete":
        if values.shape != (batch,):
            raise SpaceError(f"{what} have shape {values.shape}, expected ({batch},): one "
                             "discrete value per agent")
        if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.integer):
            raise SpaceError(f"{what} have dtype {values.dtype}, expected an integer dtype")
        bad = (values < 0) | (values >= int(space["n"]))
        if bad.any():
            row = int(np.argmax(bad))
            raise SpaceError(f"{what}: row {row} holds {values[row]}, outside [0, {space['n']})")
        return
    shape = (batch, *space["shape"])
    if values.shape != shape:
        raise SpaceError(f"{what} have shape {values.shape}, expected {shape}")
    if not np.issubdtype(values.dtype, np.floating):
        raise SpaceError(f"{what} have dtype {values.dtype}, expected a floating dtype")
    bad_row = first_nonfinite_row(values)
    if bad_row is not None:
        raise SpaceError(f"{what}: row {bad_row} contains NaN or infinity (in float32)")


def first_nonfinite_row(values: np.ndarray) -> int | None:
    """The first row of `values` [B, ...] with a value that is not finite once cast to float32
    (NaN, infinity, or a finite wider float beyond float32's range); None if there is none."""
    if values.dtype.kind != "f" or values.size == 0:
        return None
    finite = np.isfinite(values)
    if values.dtype.itemsize > 4:
        finite &= np.abs(values) <= np.finfo(np.float32).max
    if finite.all():  # the common case: one pass over the flat mask (the row-wise pass costs 4x more)
        return None
    rows = finite.reshape(values.shape[0], -1).all(axis=1)
    return int(np.argmin(rows))
