"""SPACE dicts: gymnasium round trips, validation, and batches of values checked against a space."""

import numpy as np
import pytest

from worldssm import codec
from worldssm.errors import WorldssmError
from worldssm.spaces import (
    SpaceError,
    check_batch,
    check_space_dict,
    first_nonfinite_row,
    sample_batch,
    space_from_dict,
    space_to_dict,
    spaces_differ,
)

BOX = {"type": "box", "shape": [2], "dtype": "float32", "low": np.array([-1, -2], np.float32),
       "high": np.array([1, np.inf], np.float32)}


def test_spaces_round_trip_through_gymnasium():
    import gymnasium

    box = gymnasium.spaces.Box(0, 255, (4, 4, 3), np.uint8)
    d = space_to_dict(box)
    assert d["dtype"] == "uint8" and d["shape"] == [4, 4, 3] and d["high"].dtype == np.uint8
    assert space_from_dict(codec.unpackb(codec.packb(d))) == box
    assert space_from_dict(
        space_to_dict(gymnasium.spaces.Discrete(5))
    ) == gymnasium.spaces.Discrete(5)
    pend = gymnasium.spaces.Box(
        np.array([-1, -2], np.float32), np.array([1, np.inf], np.float32), dtype=np.float32
    )
    assert space_from_dict(space_to_dict(pend)) == pend
    for bad in (gymnasium.spaces.MultiBinary(3), gymnasium.spaces.Discrete(3, start=1)):
        with pytest.raises(WorldssmError):
            space_to_dict(bad)


def test_malformed_space_dicts_are_named():
    with pytest.raises(SpaceError, match="type 'box' or 'discrete'"):
        check_space_dict({"type": "tuple"})
    with pytest.raises(SpaceError, match="positive int n"):
        check_space_dict({"type": "discrete", "n": True})
    with pytest.raises(SpaceError, match="dtype float32, expected float64"):
        check_space_dict({**BOX, "dtype": "float64"})
    with pytest.raises(SpaceError, match="exactly the fields"):
        check_space_dict({**BOX, "extra": 1})


def _nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"type": np.zeros(3)}, "type 'box' or 'discrete'"),
        ({"type": _nested(5000)}, "type 'box' or 'discrete'"),
        ({"type": ["box"]}, "type 'box' or 'discrete'"),
        ({**BOX, "dtype": ","}, "box dtype must be one of bool, uint8, .*, got ','"),
        ({**BOX, "dtype": "(9999999999,)f4"}, "box dtype must be one of"),
        ({**BOX, "dtype": "<f4"}, "box dtype must be one of"),
        ({**BOX, "dtype": np.float32}, "box dtype must be one of"),
        ({**BOX, "shape": [True]}, "box shape must be a list of non-negative ints"),
        ({"type": "discrete", "n": [[[[[[[[1]]]]]]]] * 10_000}, "positive int n, got \\[\\[\\["),
    ],
)
def test_hostile_space_dicts_are_space_errors(bad, words):
    """A SPACE dict read from a damaged file: only SpaceError, with a short message (no NumPy
    dtype parser errors, no ambiguous array truth values, no RecursionError from repr)."""
    with pytest.raises(SpaceError, match=words) as info:
        check_space_dict(bad)
    assert len(str(info.value)) < 300


def test_sample_batch_draws_in_the_space_without_gymnasium(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gymnasium", None)  # any import of it raises
    rng = np.random.default_rng(0)
    x = sample_batch(BOX, 4000, rng)
    assert x.shape == (4000, 2) and x.dtype == np.float32
    assert (x[:, 0] >= -1).all() and (x[:, 0] <= 1).all() and x[:, 0].std() > 0.5  # uniform on [-1, 1]: 0.58
    assert x[:, 1].min() < -2 and abs(x[:, 1].std() - 1) < 0.1  # a half-unbounded dim: standard normal
    img = {"type": "box", "shape": [3, 2], "dtype": "uint8", "low": np.zeros((3, 2), np.uint8),
           "high": np.full((3, 2), 255, np.uint8)}
    v = sample_batch(img, 500, rng)
    assert v.shape == (500, 3, 2) and v.dtype == np.uint8 and v.max() > 200 and v.min() < 50
    d = sample_batch({"type": "discrete", "n": 3}, 600, rng)
    assert d.dtype == np.int64 and sorted(set(d.tolist())) == [0, 1, 2]
    check_batch(BOX, x, 4000)
    check_batch({"type": "discrete", "n": 3}, d, 600)
    a, b = sample_batch(BOX, 5, np.random.default_rng(7)), sample_batch(BOX, 5, np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_spaces_differ_names_the_field():
    assert spaces_differ(BOX, dict(BOX)) is None
    assert spaces_differ(BOX, {**BOX, "high": np.array([1, 2], np.float32)}) == "high"
    assert spaces_differ(BOX, {"type": "discrete", "n": 2}) == "type"
    assert spaces_differ({"type": "discrete", "n": 2}, {"type": "discrete", "n": 3}) == "n"


def test_check_batch_accepts_good_values():
    check_batch(BOX, np.zeros((3, 2), np.float32), 3)
    check_batch(BOX, np.zeros((3, 2), np.float64), 3)
    check_batch({"type": "discrete", "n": 4}, np.array([0, 3, 1]), 3)


@pytest.mark.parametrize("space, values, match", [
    (BOX, np.zeros((3, 3), np.float32), r"shape \(3, 3\), expected \(3, 2\)"),
    (BOX, np.zeros((3, 2), np.int64), "floating dtype"),
    (BOX, np.array([[0, 0], [0, np.nan], [0, 0]]), "row 1 contains NaN"),
    (BOX, np.array([[0, 0], [0, 0], [1e39, 0]]), "row 2 contains NaN or infinity \\(in float32\\)"),
    ({"type": "discrete", "n": 4}, np.array([0, 4, 1]), "row 1 holds 4, outside \\[0, 4\\)"),
    ({"type": "discrete", "n": 4}, np.array([0, -1, 1]), "row 1 holds -1"),
    ({"type": "discrete", "n": 4}, np.array([True, False, True]), "integer dtype"),
    ({"type": "discrete", "n": 4}, [0, 1, 2], "numpy array"),
])
def test_check_batch_names_what_is_wrong(space, values, match):
    with pytest.raises(SpaceError, match=match):
        check_batch(space, values, 3)


def test_first_nonfinite_row_checks_in_float32():
    assert first_nonfinite_row(np.zeros((4, 2), np.float32)) is None
    assert first_nonfinite_row(np.zeros((4, 2), np.int64)) is None
    big = np.zeros((4, 2))
    big[3, 1] = 3.5e38  # finite in float64, infinite in float32
    assert first_nonfinite_row(big) == 3
    assert first_nonfinite_row(big.astype(np.float32)) == 3
