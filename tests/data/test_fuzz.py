"""Fuzz the shard reader: however a shard is damaged or forged, only our own errors come out.

Starts from valid shards (vector and image observations, discrete observations, Box and
discrete actions, an empty shard, a version-1 shard) and mutates them: bit flips, byte
insertions and deletions, truncations, random length prefixes, payloads mutated under a valid
CRC (so the decoder and validator are reached), msgpack-level mutations of records (wrong types,
huge ints, deep nesting, unknown ext codes, forged or mismatched arrays, missing and unknown
fields), and record-level ones (dropped, repeated, swapped records, forged end records).
FUZZ_CASES cases run in CI; WORLDSSM_FUZZ_CASES runs more (see tests/fuzz_helpers.py).
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np

from tests.fuzz_helpers import (
    decode_tree,
    forged_header,
    fuzz_cases,
    mutate_bytes,
    mutate_tree,
    pack_tree,
    run_fuzz,
)
from worldssm.codec import CodecError
from worldssm.data import RolloutDataset
from worldssm.data.format import (
    END_FIELDS,
    HEADER_FIELDS,
    MAGIC,
    MAX_RECORD_BYTES,
    RECORD_PREFIX,
    STEPS_FIELDS,
    LegacyShardWarning,
    ShardWriter,
    iter_shard,
    make_header,
)
from worldssm.errors import DataError, WorldssmError

from ._helpers import box_space, steps, vector_header

FUZZ_CASES = fuzz_cases(20_000)
OURS = (DataError, WorldssmError, CodecError)
FIELDS = sorted(set(HEADER_FIELDS + STEPS_FIELDS + END_FIELDS))
FIXTURES = Path(__file__).parent / "fixtures"


def _write(path, header, records) -> bytes:
    with ShardWriter(path, header) as writer:
        for record in records:
            writer.write(record)
    return path.read_bytes()


def _bases(tmp_path) -> list[bytes]:
    image = make_header("Img-v0", box_space([8, 8, 3], 0, 255, "uint8"), {"type": "discrete", "n": 3},
                        ["x", "y"], {"seed": 1, "env_kwargs": {"size": 8}})
    frames = np.arange(4 * 192, dtype=np.uint8).reshape(4, 8, 8, 3)
    image_steps = dict(steps("x", 0, 4, terminal=True), obs=frames, action=np.array([2, 1, 0, 0]))
    discrete = make_header("Rps-v0", {"type": "discrete", "n": 4}, {"type": "discrete", "n": 3}, ["p"], {})
    rps = dict(steps("p", 2, 3), obs=np.array([3, 0, 1]), action=np.array([1, 2, 0]))
    return [
        _write(tmp_path / "vector.wsr", vector_header(), [
            steps("a", 0, 4, last=False), steps("b", 0, 3, terminal=True), steps("a", 0, 2, first=False, start=4)]),
        _write(tmp_path / "image.wsr", image, [image_steps, steps("y", 0, 1, last=False) | {
            "obs": frames[:1], "action": np.array([1])}]),
        _write(tmp_path / "discrete.wsr", discrete, [rps]),
        _write(tmp_path / "empty.wsr", vector_header(), []),
        (FIXTURES / "v1-vector.wsr").read_bytes(),
    ]


def _split(shard: bytes) -> list[bytes]:
    """The payloads of a valid shard's records, in order."""
    payloads, pos = [], len(MAGIC)
    while pos < len(shard):
        length, _ = RECORD_PREFIX.unpack_from(shard, pos)
        payloads.append(shard[pos + 8 : pos + 8 + length])
        pos += 8 + length
    return payloads


def _frame(payload: bytes) -> bytes:
    return RECORD_PREFIX.pack(len(payload), zlib.crc32(payload)) + payload


def _join(payloads: list[bytes]) -> bytes:
    return MAGIC + b"".join(_frame(p) for p in payloads)


def _mutate_length(rng, payloads):
    i = int(rng.integers(len(payloads)))
    frames = [_frame(p) for p in payloads]
    size = len(MAGIC) + sum(map(len, frames))
    length = int(rng.choice([0, 1, len(payloads[i]) - 1, len(payloads[i]) + 1, size, MAX_RECORD_BYTES,
                             MAX_RECORD_BYTES + 1, 2**32 - 1, int(rng.integers(2**32))]))
    length = min(max(length, 0), 2**32 - 1)
    frames[i] = struct.pack("<I", length) + frames[i][4:]
    return MAGIC + b"".join(frames), f"length: record {i} declares {length}"


def _mutate_payload(rng, payloads):
    i = int(rng.integers(len(payloads)))
    payloads[i], what = mutate_bytes(rng, payloads[i])
    return _join(payloads), f"payload: record {i} {what} (valid CRC)"


def _mutate_record_tree(rng, payloads):
    i = int(rng.integers(len(payloads)))
    tree = decode_tree(payloads[i])
    whats = []
    for _ in range(int(rng.integers(1, 4))):
        tree, what = mutate_tree(rng, tree, FIELDS)
        whats.append(what.split(": ", 1)[1])
    payloads[i] = pack_tree(rng, tree)
    return _join(payloads), f"tree: record {i} {'; '.join(whats)} (valid CRC)"


def _mutate_records(rng, payloads):
    op = int(rng.integers(6))
    i, j = (int(x) for x in rng.integers(len(payloads), size=2))
    if op == 0 and len(payloads) > 1:
        del payloads[i]
        what = f"dropped record {i}"
    elif op == 1:
        payloads.insert(i, payloads[j])
        what = f"record {j} repeated at {i}"
    elif op == 2:
        payloads[i], payloads[j] = payloads[j], payloads[i]
        what = f"swapped records {i} and {j}"
    elif op == 3:
        counts = [int(x) for x in rng.integers(-1, 12, size=2)]
        end = {"kind": "end", "records": counts[0], "steps": counts[1]}
        payloads.insert(i, pack_tree(rng, end))
        what = f"an end record {counts} at {i}"
    elif op == 4:
        payloads.insert(i, forged_header(rng))
        what = f"a forged length header at {i}"
    else:
        return _join(payloads) + rng.bytes(int(rng.integers(1, 40))), "records: garbage after the end"
    return _join(payloads), f"records: {what}"


def _make_case(bases):
    families = (_mutate_length, _mutate_payload, _mutate_record_tree, _mutate_records)

    def make(rng):
        base = bases[int(rng.integers(len(bases)))]
        pick = int(rng.integers(len(families) + 1))
        if pick == len(families):
            data, what = mutate_bytes(rng, base)
        else:
            data, what = families[pick](rng, _split(base))
        if rng.random() < 0.15:
            data, more = mutate_bytes(rng, data)
            what += f" then {more}"
        return (data, rng.random() < 0.25), what

    return make


def test_fuzz_the_shard_reader(tmp_path):
    bases = _bases(tmp_path)
    path = tmp_path / "case.wsr"
    path.touch()
    fd = os.open(path, os.O_WRONLY)

    def check(case):
        data, load = case
        # Rewritten in place, then cut to size: on ext4 a file truncated to 0 is flushed when
        # the reader closes it (auto_da_alloc), ~3 ms a case.
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
        if load:
            RolloutDataset.load(path)
        else:
            for _ in iter_shard(path):
                pass

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LegacyShardWarning)
        for base in bases:  # the bases themselves are valid
            path.write_bytes(base)
            RolloutDataset.load(path)
        try:
            outcomes = run_fuzz("shard reader", FUZZ_CASES, _make_case(bases), check, OURS)
        finally:
            os.close(fd)
    # The mutations reach past the framing: decoding and validation both reject cases.
    reached = sum(n for key, n in outcomes.items() if key.startswith(("tree", "payload")))
    assert reached > FUZZ_CASES // 5
