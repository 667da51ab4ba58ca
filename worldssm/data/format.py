"""The rollout shard format (`*.wsr`): writing, reading and validation.

A shard is the 8-byte magic `b"WSSMROLL"` followed by records. Each record is::

    u32 LE payload length | u32 LE zlib.crc32(payload) | payload (msgpack via worldssm.codec)

Record 0 is the header::

    {"kind": "header", "format_version": 1, "env_id": str,
     "observation_space": SPACE, "action_space": SPACE, "agent_ids": [str, ...], "meta": {...}}

where SPACE is `{"type": "box", "shape": [...], "dtype": str, "low": array, "high": array}` or
`{"type": "discrete", "n": int}`. Every later record is a contiguous segment of one agent's
episode (DreamerV3 convention; T steps, all fields length T)::

    {"kind": "steps", "agent": str, "episode": int,
     "obs": [T, *obs_shape], "action": [T, *act_shape] (discrete: int64 [T]),
     "reward": float32 [T], "is_first": bool [T], "is_last": bool [T], "is_terminal": bool [T]}

Step t holds observation o_t, the action taken from o_t (zeros on the is_last step), and the
reward received on arriving at o_t (0 on is_first). The final observation of an episode is its
own is_last step; is_terminal marks termination (as opposed to truncation). Long episodes span
several consecutive records; is_first marks the start of an episode, so only a segment's first
step may be is_first and only its last step may be is_last.

Every problem found while reading raises `worldssm.errors.DataError(path, offset, message)`
with the byte offset of the damaged record (0 for the magic).
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from worldssm import codec
from worldssm.errors import DataError
from worldssm.spaces import check_space_dict, space_step_layout

MAGIC = b"WSSMROLL"
FORMAT_VERSION = 1
SHARD_SUFFIX = ".wsr"
RECORD_PREFIX = struct.Struct("<II")
STEP_FIELDS = ("obs", "action", "reward", "is_first", "is_last", "is_terminal")
HEADER_FIELDS = (
    "kind",
    "format_version",
    "env_id",
    "observation_space",
    "action_space",
    "agent_ids",
    "meta",
)
STEPS_FIELDS = ("kind", "agent", "episode") + STEP_FIELDS


def make_header(
    env_id: str, observation_space: dict, action_space: dict, agent_ids: list[str], meta: dict
) -> dict:
    """Build (and validate) a header record from SPACE dicts."""
    header = {
        "kind": "header",
        "format_version": FORMAT_VERSION,
        "env_id": env_id,
        "observation_space": observation_space,
        "action_space": action_space,
        "agent_ids": list(agent_ids),
        "meta": dict(meta),
    }
    check_header(header)
    return header


def check_header(header: Any) -> None:
    """Raise ValueError unless `header` is a valid format-1 header record."""
    if not isinstance(header, dict):
        raise ValueError(f"header must be a map, got {type(header).__name__}")
    if header.get("kind") != "header":
        raise ValueError(f"record 0 must have kind 'header', got {header.get('kind')!r}")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"unknown format_version {header.get('format_version')!r} "
            f"(this worldssm reads version {FORMAT_VERSION})"
        )
    _check_fields(header, HEADER_FIELDS, "header")
    if not isinstance(header["env_id"], str):
        raise ValueError("header env_id must be a string")
    for name in ("observation_space", "action_space"):
        try:
            check_space_dict(header[name])
        except ValueError as exc:
            raise ValueError(f"header {name}: {exc}") from exc
    ids = header["agent_ids"]
    if not isinstance(ids, list) or not all(isinstance(a, str) for a in ids):
        raise ValueError("header agent_ids must be a list of strings")
    if len(set(ids)) != len(ids):
        raise ValueError("header agent_ids contains duplicates")
    if not isinstance(header["meta"], dict):
        raise ValueError("header meta must be a map")


def check_steps(record: Any, header: dict) -> int:
    """Raise ValueError unless `record` is a valid steps record for `header`.

    Returns:
        T, the number of steps in the record.
    """
    if not isinstance(record, dict):
        raise ValueError(f"record must be a map, got {type(record).__name__}")
    if record.get("kind") != "steps":
        raise ValueError(f"unknown record kind {record.get('kind')!r} (expected 'steps')")
    _check_fields(record, STEPS_FIELDS, "steps record")
    if record["agent"] not in header["agent_ids"]:
        raise ValueError(f"agent {record['agent']!r} is not in the header's agent_ids")
    if not isinstance(record["episode"], int) or record["episode"] < 0:
        raise ValueError(f"episode must be a non-negative int, got {record['episode']!r}")
    obs_shape, obs_dtype = space_step_layout(header["observation_space"])
    act_shape, act_dtype = space_step_layout(header["action_space"])
    layout = {
        "obs": (obs_shape, obs_dtype),
        "action": (act_shape, act_dtype),
        "reward": ((), np.dtype(np.float32)),
        "is_first": ((), np.dtype(bool)),
        "is_last": ((), np.dtype(bool)),
        "is_terminal": ((), np.dtype(bool)),
    }
    length = None
    for name, (shape, dtype) in layout.items():
        arr = record[name]
        if not isinstance(arr, np.ndarray) or arr.ndim < 1:
            raise ValueError(f"field {name} must be an array with a leading time axis")
        if length is None:
            length = arr.shape[0]
        if arr.shape != (length, *shape) or arr.dtype != dtype:
            raise ValueError(
                f"field {name} has shape {list(arr.shape)} and dtype {arr.dtype}, expected "
                f"shape {[length, *shape]} and dtype {dtype} (from the header and field obs)"
            )
    _check_flags(record, length)
    return length


def _check_fields(record: dict, fields: tuple[str, ...], what: str) -> None:
    missing = [f for f in fields if f not in record]
    if missing:
        raise ValueError(f"{what} is missing fields {missing}")
    extra = sorted(set(record) - set(fields))
    if extra:
        raise ValueError(f"{what} has unknown fields {extra}")


def _check_flags(record: dict, length: int) -> None:
    if length < 1:
        raise ValueError("steps record is empty (T = 0)")
    if record["is_first"][1:].any():
        raise ValueError("is_first is set after the first step of a segment")
    if record["is_last"][:-1].any():
        raise ValueError("is_last is set before the last step of a segment")
    if (record["is_terminal"] & ~record["is_last"]).any():
        raise ValueError("is_terminal is set on a step that is not is_last")


def encode_record(record: dict) -> bytes:
    """Frame one record: length prefix, CRC32 and msgpack payload."""
    payload = codec.packb(record)
    return RECORD_PREFIX.pack(len(payload), zlib.crc32(payload)) + payload


class ShardWriter:
    """Write one shard atomically: to a hidden temp file, renamed into place by `close()`.

    The temp name (`.<name>.<random>.tmp`) does not end in `.wsr`, so an interrupted writer never
    leaves a file that a reader would load. Use as a context manager: leaving the block with an
    exception deletes the temp file instead of publishing it.

    Args:
        path: final file path (should end in `.wsr`).
        header: a header record (see `make_header`); validated before anything is written.
    """

    def __init__(self, path, header: dict):
        check_header(header)
        self.path = Path(path)
        self.header = header
        self.num_records = 0
        self.num_steps = 0
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.tmp")
        self._file = open(self._tmp, "xb")
        self._file.write(MAGIC)
        self._file.write(encode_record(header))

    def write(self, record: dict) -> None:
        """Append one steps record (validated against the header; see `check_steps`)."""
        if self._file is None:
            raise ValueError(f"ShardWriter for {self.path} is closed")
        self.num_steps += check_steps(record, self.header)
        self._file.write(encode_record(record))
        self.num_records += 1

    def close(self) -> Path:
        """Flush, fsync and atomically rename the shard into place; returns the final path."""
        if self._file is None:
            raise ValueError(f"ShardWriter for {self.path} is already closed")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.replace(self._tmp, self.path)
        _fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        """Discard the shard: close and delete the temp file (no-op after close)."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable; directories cannot be opened for fsync on Windows.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def iter_shard(path) -> Iterator[tuple[int, dict]]:
    """Yield `(offset, record)` for every record of a shard, header first, validating each.

    Args:
        path: a `.wsr` file.

    Yields:
        The byte offset where the record's length prefix starts, and the decoded record.

    Raises:
        DataError: bad magic, truncation, CRC mismatch, undecodable payload, unknown
            format_version or kind, missing fields, or arrays disagreeing with the header.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if f.read(len(MAGIC)) != MAGIC:
            raise DataError(path, 0, f"not a worldssm rollout shard (magic is not {MAGIC!r})")
        offset = len(MAGIC)
        header = None
        while offset < size:
            record = _read_record(f, path, offset, size)
            try:
                if header is None:
                    check_header(record)
                    header = record
                else:
                    check_steps(record, header)
            except ValueError as exc:
                raise DataError(path, offset, str(exc)) from exc
            yield offset, record
            offset = f.tell()
        if header is None:
            raise DataError(path, offset, "shard has no header record")


def _read_record(f, path: Path, offset: int, size: int) -> Any:
    prefix = f.read(RECORD_PREFIX.size)
    if len(prefix) < RECORD_PREFIX.size:
        raise DataError(path, offset, f"truncated record prefix ({len(prefix)} of 8 bytes)")
    length, crc = RECORD_PREFIX.unpack(prefix)
    available = size - offset - RECORD_PREFIX.size
    if length > available:
        raise DataError(path, offset, f"truncated record: needs {length} bytes, {available} left")
    payload = f.read(length)
    if len(payload) != length:
        raise DataError(path, offset, f"truncated record: read {len(payload)} of {length} bytes")
    if zlib.crc32(payload) != crc:
        raise DataError(path, offset, "CRC32 mismatch: the record is damaged")
    try:
        return codec.unpackb(payload)
    except codec.CodecError as exc:
        raise DataError(path, offset, f"undecodable record: {exc}") from exc


def read_shard(path) -> tuple[dict, list[dict]]:
    """Read a whole shard.

    Returns:
        (header, steps_records) with records in file order.

    Raises:
        DataError: see `iter_shard`.
    """
    records = [record for _, record in iter_shard(path)]
    return records[0], records[1:]
