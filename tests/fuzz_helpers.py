"""Shared machinery of the fuzz tests (tests/data/test_fuzz.py, tests/test_codec_fuzz.py).

Every case draws from its own generator, seeded with [FUZZ_SEED, case index], so a failure
names the case and the mutation and replays alone. A case is stopped by SIGALRM after
HANG_SECONDS, which fails it as a hang. `fuzz_cases(default)` reads WORLDSSM_FUZZ_CASES, so a
longer run is `WORLDSSM_FUZZ_CASES=100000 python -m pytest tests/data/test_fuzz.py -s`.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
import signal
import time
import traceback
from collections import Counter

import msgpack
import numpy as np

from worldssm import codec

FUZZ_SEED = 20_251_205
HANG_SECONDS = 5
# Raw msgpack bytes travel through a tree as this placeholder string, spliced in by pack_tree:
# the packer cannot write negative ext codes or nest deeper than 512.
_RAW = re.compile(rb"\x00raw:([0-9a-f]*)\x00")


def fuzz_cases(default: int) -> int:
    """How many cases to run: WORLDSSM_FUZZ_CASES if set, else `default`."""
    return int(os.environ.get("WORLDSSM_FUZZ_CASES", default))


class Hang(BaseException):
    """Raised by the alarm inside a case that ran past HANG_SECONDS."""


def _alarm(signum, frame):
    raise Hang(f"the case ran past {HANG_SECONDS} s")


def run_fuzz(name: str, cases: int, make_case, check, ours: tuple[type, ...]) -> Counter:
    """Run `check(make_case(rng))` for every case and fail unless only `ours` come out.

    Args:
        name: shown in the report.
        cases: how many cases.
        make_case: rng -> (data, description of the mutation).
        check: data -> None; the code under test.
        ours: the exception types the code under test may raise.

    Returns:
        Outcome counts per mutation family: "<family> ok" and "<family> <ErrorType>".
    """
    outcomes: Counter = Counter()
    failures: list[str] = []
    slowest = (0.0, -1)
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for case in range(cases):
            rng = np.random.default_rng([FUZZ_SEED, case])
            data, what = make_case(rng)
            family = what.split(":", 1)[0]
            start = time.perf_counter()
            signal.alarm(HANG_SECONDS)
            try:
                check(data)
                outcomes[f"{family} ok"] += 1
            except ours as exc:
                outcomes[f"{family} {type(exc).__name__}"] += 1
            except BaseException as exc:  # anything else is the finding
                if isinstance(exc, KeyboardInterrupt):
                    raise
                failures.append(f"case {case} ({what}): {type(exc).__name__}: {exc}\n"
                                f"{''.join(traceback.format_exception(exc)[-4:])}")
            finally:
                signal.alarm(0)
            slowest = max(slowest, (time.perf_counter() - start, case))
    finally:
        signal.signal(signal.SIGALRM, previous)
    print(f"\n{name}: {cases} cases (seed {FUZZ_SEED}), slowest case {slowest[1]} took "
          f"{slowest[0] * 1e3:.1f} ms; outcomes: {dict(sorted(outcomes.items()))}")
    assert not failures, f"{len(failures)} of {cases} cases raised foreign errors:\n" + "\n".join(failures[:5])
    return outcomes


def flip_bits(rng, data: bytes) -> tuple[bytes, str]:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(len(out)))
        out[i] ^= 1 << int(rng.integers(8))
    return bytes(out), "bits: flipped"


def insert_bytes(rng, data: bytes) -> tuple[bytes, str]:
    i = int(rng.integers(len(data) + 1))
    junk = rng.bytes(int(rng.integers(1, 17)))
    return data[:i] + junk + data[i:], f"insert: {len(junk)} bytes at {i}"


def delete_bytes(rng, data: bytes) -> tuple[bytes, str]:
    i = int(rng.integers(len(data)))
    n = int(rng.integers(1, 17))
    return data[:i] + data[i + n :], f"delete: {n} bytes at {i}"


def truncate(rng, data: bytes) -> tuple[bytes, str]:
    i = int(rng.integers(len(data)))
    return data[:i], f"truncate: at {i}"


BYTE_MUTATIONS = (flip_bits, insert_bytes, delete_bytes, truncate)


def mutate_bytes(rng, data: bytes) -> tuple[bytes, str]:
    """One byte-level mutation (bit flips, an insertion, a deletion or a truncation)."""
    if not data:
        return rng.bytes(int(rng.integers(1, 9))), "insert: into nothing"
    return BYTE_MUTATIONS[int(rng.integers(len(BYTE_MUTATIONS)))](rng, data)


def _forged_array(rng) -> msgpack.ExtType:
    """An ndarray ext whose payload may lie: any dtype code, ndim, dims and data length."""
    code = int(rng.choice([*codec.DTYPE_CODES.values(), 0, 12, 99, 255]))
    ndim = int(rng.choice([0, 1, 2, 3, 4, 32, 33, 200]))
    dims = rng.choice([0, 1, 2, 3, 7, 2**16, 2**31, 2**32 - 1], size=ndim).astype(np.uint32)
    data = rng.bytes(int(rng.choice([0, 1, 3, 8, 24, 64])))
    return msgpack.ExtType(codec.EXT_NDARRAY, bytes([code, ndim % 256]) + dims.tobytes() + data)


def random_array(rng) -> np.ndarray:
    """A valid array of any allow-listed dtype and a small random shape (0-d and empty too)."""
    dtype = str(rng.choice(list(codec.DTYPE_CODES)))
    shape = tuple(int(d) for d in rng.integers(0, 4, size=int(rng.integers(0, 4))))
    values = rng.normal(size=shape) * 100
    return values.astype(dtype) if dtype != "bool" else values > 0


def _pick(rng, values: list):
    return values[int(rng.integers(len(values)))]


def evil_value(rng):
    """A value of a wrong type, size or depth for whatever field it replaces."""
    kind = int(rng.integers(13))
    if kind == 0:
        return _pick(rng, [None, True, False, 0, -1, 1.5, float("nan"), float("-inf"), "", "x", "é",
                           b"", b"\x00\xff", [], {}, [1, "a", None], {"k": 1}])
    if kind == 12:  # strings NumPy's dtype parser chokes on in different ways, and valid names
        return _pick(rng, [",", "(9999999999,)f4", "f4,f4", "O", "<f4", "M8[xyz]", "\x00", "float32",
                           "uint8", "box", "discrete", "steps", "end", "header"])
    if kind == 1:
        return _pick(rng, [2**63 - 1, 2**64 - 1, -(2**63), 2**32, 2**31 - 1, -(2**31)])
    if kind == 2:
        return "w" * int(rng.choice([100, 5000, 2**20 + 1]))
    if kind == 3:  # an unknown ext code (-1 is msgpack's own timestamp)
        code = int(rng.choice([-128, -1, 0, 7, 41, 43, 127]))
        size = int(rng.choice([4, 8, 12])) if code == -1 and rng.random() < 0.7 else int(rng.integers(0, 20))
        return _raw(_ext(code, rng.bytes(size)))
    if kind == 4:
        return _forged_array(rng)
    if kind == 5:
        return msgpack.ExtType(codec.EXT_NDARRAY, codec.encode_array(random_array(rng)))
    if kind == 6:  # deeper than msgpack's stack (1,024) or Python's recursion limit
        depth = int(rng.choice([100, 1_000, 1_100, 20_000]))
        return _raw((b"\x91" if rng.random() < 0.5 else b"\x81\xa1k") * depth + b"\xc0")
    if kind == 7:
        return list(range(int(rng.choice([100, 3_000]))))
    if kind == 8:
        return {f"k{i}": i for i in range(int(rng.choice([10, 1_000])))}
    if kind == 9:
        return {1: 2} if rng.random() < 0.5 else {b"bytes-key": 1}
    if kind == 10:
        return [[[["nested"]]]] * 3
    return float(rng.choice([1e39, -1e308, 5e-324]))


def decode_tree(payload: bytes):
    """Decode a payload with every ext left as msgpack.ExtType (arrays stay opaque)."""
    return msgpack.unpackb(payload, raw=False, strict_map_key=False,
                           ext_hook=lambda code, data: msgpack.ExtType(code, data))


def _slots(tree, out, depth=0):
    """(container, key) for values below `tree`: the first 32 of each container, 20 levels deep
    (a mutation may have planted a container of 70,000 entries)."""
    if depth > 20:
        return out
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in itertools.islice(items, 32):
        out.append((tree, key))
        _slots(value, out, depth + 1)
    return out


def mutate_tree(rng, tree, field_names=()):
    """Mutate a decoded msgpack tree in place (or replace it); returns (tree, description)."""
    slots = _slots(tree, [])
    op = int(rng.integers(6))
    if not slots or op == 0:
        return evil_value(rng), "tree: replaced the root"
    container, key = slots[int(rng.integers(len(slots)))]
    if op == 1 and isinstance(container, dict):
        del container[key]
        return tree, f"tree: deleted {key!r}"
    if op == 2 and isinstance(container, dict):
        names = list(field_names) or ["extra"]
        new = names[int(rng.integers(len(names)))] if rng.random() < 0.5 else "unknown_field"
        container[new] = evil_value(rng)
        return tree, f"tree: set {new!r}"
    if op == 3:  # a copy, not a swap: swapping a value with its own descendant makes a cycle
        other, other_key = slots[int(rng.integers(len(slots)))]
        container[key] = copy.deepcopy(other[other_key])
        return tree, f"tree: copied {other_key!r} onto {key!r}"
    if op == 4 and isinstance(container[key], msgpack.ExtType):
        container[key] = _forged_array(rng) if rng.random() < 0.5 else msgpack.ExtType(
            codec.EXT_NDARRAY, codec.encode_array(random_array(rng)))
        return tree, f"tree: another array at {key!r}"
    container[key] = evil_value(rng)
    return tree, f"tree: replaced {key!r}"


def _raw(data: bytes) -> str:
    return f"\x00raw:{data.hex()}\x00"


def _ext(code: int, data: bytes) -> bytes:
    """An ext of any code (-128..127) as raw msgpack: fixext for 1, 2, 4, 8, 16 bytes, else ext 8."""
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}.get(len(data))
    head = bytes([fixed]) if fixed else bytes([0xC7, len(data)])
    return head + bytes([code & 0xFF]) + data


def pack_tree(rng, tree) -> bytes:
    """Pack a mutated tree, splicing in the raw bytes its placeholders stand for."""
    data = msgpack.packb(tree, use_bin_type=True)
    for hexed in set(_RAW.findall(data)):
        marker = msgpack.packb(_raw(bytes.fromhex(hexed.decode())), use_bin_type=True)
        data = data.replace(marker, bytes.fromhex(hexed.decode()))
    return data


def forged_header(rng) -> bytes:
    """A msgpack value whose header declares a huge str, bin, ext, array or map length."""
    n = int(rng.choice([2**16, 2**20, 2**28, 2**31, 2**32 - 1]))
    head = rng.choice([b"\xdb", b"\xc6", b"\xc9", b"\xdd", b"\xdf"])
    return bytes(head) + n.to_bytes(4, "big") + (b"\x07" if head == b"\xc9" else b"") + rng.bytes(8)
