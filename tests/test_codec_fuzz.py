"""Fuzz the codec: decoding mutated or forged messages raises CodecError or nothing, fast.

Starts from valid messages (shard records with vector and image observations, Simulation-like
messages, arrays of every dtype, scalars) and mutates bytes (bit flips, insertions, deletions,
truncations), the decoded msgpack tree (wrong types, huge ints, deep nesting, unknown ext codes,
forged arrays) and length headers (huge declared str, bin, ext, array and map lengths), then
decodes with the default limits, the shard record limits and tight ones. Encoding random and
unsupported values raises CodecError or nothing. FUZZ_CASES cases run in CI;
WORLDSSM_FUZZ_CASES runs more (see tests/fuzz_helpers.py).
"""

from __future__ import annotations

import numpy as np

from tests.fuzz_helpers import (
    decode_tree,
    evil_value,
    forged_header,
    fuzz_cases,
    mutate_bytes,
    mutate_tree,
    pack_tree,
    random_array,
    run_fuzz,
)
from worldssm import codec
from worldssm.codec import CodecError, Limits, packb, unpackb
from worldssm.data.format import RECORD_LIMITS

FUZZ_CASES = fuzz_cases(20_000)
PACK_CASES = fuzz_cases(5_000)
LIMITS = (codec.DEFAULT_LIMITS, RECORD_LIMITS, Limits(max_buffer_size=4096, max_str_len=64, max_bin_len=64,
                                                      max_array_len=16, max_map_len=16, max_ext_len=1024))


def _messages() -> list[bytes]:
    rng = np.random.default_rng(0)
    steps = {"kind": "steps", "agent": "agent_3", "episode": 2,
             "obs": rng.normal(size=(5, 3)).astype(np.float32), "action": np.arange(5),
             "reward": np.zeros(5, np.float32), "is_first": np.eye(1, 5, dtype=bool)[0],
             "is_last": np.zeros(5, bool), "is_terminal": np.zeros(5, bool)}
    image = dict(steps, obs=rng.integers(0, 255, (5, 8, 8, 3), dtype=np.uint8))
    tick = {"kind": "tick", "t": 17, "ids": np.arange(6), "names": ["a", "b"], "ok": True,
            "reason": None, "blob": b"\x00\x01", "nested": {"x": [1, 2.5, None, "s", {"y": [[]]}]}}
    arrays = [codec.packb(random_array(rng)) for _ in range(8)]
    return [packb(steps), packb(image), packb(tick), packb([1, -1, 2**64 - 1, "é"]), *arrays]


def _make_case(messages):
    def make(rng):
        limits = LIMITS[int(rng.integers(len(LIMITS)))]
        base = messages[int(rng.integers(len(messages)))]
        pick = int(rng.integers(4))
        if pick == 0:
            data, what = mutate_bytes(rng, base)
        elif pick in (1, 2):
            tree = decode_tree(base)
            whats = []
            for _ in range(int(rng.integers(1, 4))):
                tree, what = mutate_tree(rng, tree, ["kind", "obs", "ids"])
                whats.append(what.split(": ", 1)[1])
            data, what = pack_tree(rng, tree), "tree: " + "; ".join(whats)
        else:
            data = forged_header(rng)
            data, what = (data, "forged: a huge declared length") if rng.random() < 0.5 else (
                b"\x92" + data + base, "forged: a huge declared length inside an array")
        return (data, limits), what

    return make


def test_fuzz_unpackb():
    def check(case):
        data, limits = case
        unpackb(data, limits)

    run_fuzz("codec.unpackb", FUZZ_CASES, _make_case(_messages()), check, (CodecError,))


def test_fuzz_packb():
    """Random values, unsupported ones included, encode or raise CodecError; what encodes decodes
    (or raises CodecError: packb accepts int map keys, which unpackb refuses)."""

    def make(rng):
        values = [evil_value(rng) for _ in range(int(rng.integers(1, 4)))]
        extras = [{1j}, object(), np.zeros(2, np.complex64), np.array(["s"]), 2**64, -(2**63) - 1,
                  np.float16(1), np.datetime64(1, "s"), {"k": range(3)}, ("tuple", 1)]
        if rng.random() < 0.3:
            values.append(extras[int(rng.integers(len(extras)))])
        return values, f"values: {len(values)}"

    def check(values):
        unpackb(packb(values))

    run_fuzz("codec.packb", PACK_CASES, make, check, (CodecError,))
