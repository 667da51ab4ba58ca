"""The rollout shard format (`*.wsr`): writing, reading and validation.

A shard is the 8-byte magic `b"WSSMROLL"` followed by records. Each record is::

    u32 LE payload length | u32 LE zlib.crc32(payload) | payload (msgpack via worldssm.codec)

A payload is at most `MAX_RECORD_BYTES` (256 MiB): the writer refuses a bigger record and the
reader rejects a larger declared length before reading it, so a damaged or hostile file makes
the reader allocate at most that much per record (and the declared length must also fit in
the bytes left in the file). Payloads decode under `RECORD_LIMITS` (msgpack lengths bounded).

Record 0 is the header::

    {"kind": "header", "format_version": 2, "env_id": str,
     "observation_space": SPACE, "action_space": SPACE, "agent_ids": [str, ...], "meta": {...}}

where SPACE is `{"type": "box", "shape": [...], "dtype": str, "low": array, "high": array}` or
`{"type": "discrete", "n": int}`. Every later record but the last is a contiguous segment of
one agent's episode (DreamerV3 convention; T >= 1 steps, all fields length T)::

    {"kind": "steps", "agent": str, "episode": int,
     "obs": [T, *obs_shape], "action": [T, *act_shape] (discrete: int64 [T]),
     "reward": float32 [T], "is_first": bool [T], "is_last": bool [T], "is_terminal": bool [T]}

Step t holds observation o_t, the action taken from o_t (zeros on the is_last step), and the
reward received on arriving at o_t (0 on is_first). The final observation of an episode is its
own is_last step; is_terminal marks termination (as opposed to truncation). Long episodes span
several consecutive records; is_first marks the start of an episode, so only a segment's first
step may be is_first and only its last step may be is_last.

Values must be ones the header's spaces allow: a discrete action lies in [0, n); observations,
Box actions and rewards are finite in float32 (NaN, infinity and float64 values beyond float32's
range are refused). Box bounds are not enforced: many Gymnasium envs report observations beyond
their declared low/high, and integer dtypes such as uint8 images cannot leave them anyway.

The last record is the end record, written by `ShardWriter.close()`::

    {"kind": "end", "records": N, "steps": S}

N is the number of steps records and S the sum of their T. A shard without it (a copy cut at a
record boundary), with bytes after it, or with counts that disagree is damaged.

Version 1 (worldssm before end records) is the same without the end record; it is still read,
with a `LegacyShardWarning` naming the file, since a cut at a record boundary goes unnoticed.

Every problem found while reading raises `worldssm.errors.DataError(path, offset, message)`
with the byte offset of the damaged record (0 for the magic; for a missing end record, the
offset where it should start). The writer raises `RecordError` for a record it refuses and
`WorldssmError` naming the file when the disk fails (full, over quota), leaving no file behind.
"""

from __future__ import annotations

import errno
import math
import os
import re
import reprlib
import stat
import struct
import uuid
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from worldssm import codec
from worldssm.errors import DataError, WorldssmError, WorldssmWarning
from worldssm.spaces import (
    SpaceError,
    check_batch,
    check_space_dict,
    first_nonfinite_row,
    space_step_layout,
)

MAGIC = b"WSSMROLL"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
SHARD_SUFFIX = ".wsr"
RECORD_PREFIX = struct.Struct("<II")
MAX_RECORD_BYTES = 256 * 2**20
# Shard records carry their bulk in ndarray ext payloads; everything else is names and ids.
RECORD_LIMITS = codec.Limits(
    max_buffer_size=MAX_RECORD_BYTES,
    max_str_len=2**20,
    max_bin_len=2**20,
    max_array_len=2**20,
    max_map_len=2**16,
    max_ext_len=MAX_RECORD_BYTES,
)
# Room a steps record needs besides its arrays' data: keys, ext headers, an agent name.
_STEPS_OVERHEAD = 2 * RECORD_LIMITS.max_str_len
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
END_FIELDS = ("kind", "records", "steps")
# ShardWriter's temporary file for NAME is ".NAME.<12 hex digits>.tmp" (see _temp_name).
_TEMP_NAME = re.compile(r"\.(?P<final>.+)\.[0-9a-f]{12}\.tmp")
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_short.maxlevel = 2


class RecordError(WorldssmError, ValueError):
    """A record breaks the format: the writer refuses it; the reader reports it as a DataError."""


class LegacyShardWarning(WorldssmWarning):
    """A version-1 shard was read: it has no end record, so a cut at a record boundary is not seen."""


def make_header(
    env_id: str, observation_space: dict, action_space: dict, agent_ids: list[str], meta: dict
) -> dict:
    """Build (and validate) a header record of the current format from SPACE dicts."""
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


def check_header(header: Any, versions: tuple[int, ...] = (FORMAT_VERSION,)) -> None:
    """Raise RecordError unless `header` is a valid header record of one of `versions`."""
    if not isinstance(header, dict):
        raise RecordError(f"header must be a map, got {type(header).__name__}")
    if _kind(header) != "header":
        raise RecordError(f"record 0 must have kind 'header', got {_show(header.get('kind'))}")
    version = header.get("format_version")
    if type(version) is not int or version not in versions:
        raise RecordError(
            f"unknown format_version {_show(version)} "
            f"(expected {' or '.join(map(str, versions))})"
        )
    _check_fields(header, HEADER_FIELDS, "header")
    if not isinstance(header["env_id"], str):
        raise RecordError("header env_id must be a string")
    for name in ("observation_space", "action_space"):
        try:
            check_space_dict(header[name])
        except SpaceError as exc:
            raise RecordError(f"header {name}: {exc}") from exc
    ids = header["agent_ids"]
    if not isinstance(ids, list) or not all(isinstance(a, str) for a in ids):
        raise RecordError("header agent_ids must be a list of strings")
    if len(set(ids)) != len(ids):
        raise RecordError("header agent_ids contains duplicates")
    if not isinstance(header["meta"], dict):
        raise RecordError("header meta must be a map")


def check_steps(record: Any, header: dict) -> int:
    """Raise RecordError unless `record` is a valid steps record for `header`.

    Checks the fields, each array's shape and dtype against the header's spaces, the episode
    flags, and the values (see `check_values`).

    Returns:
        T, the number of steps in the record.
    """
    if not isinstance(record, dict):
        raise RecordError(f"record must be a map, got {type(record).__name__}")
    if _kind(record) != "steps":
        raise RecordError(f"unknown record kind {_show(record.get('kind'))} (expected 'steps')")
    _check_fields(record, STEPS_FIELDS, "steps record")
    agent = record["agent"]
    if not isinstance(agent, str) or agent not in header["agent_ids"]:
        raise RecordError(f"agent {_show(agent)} is not in the header's agent_ids")
    if not _is_int(record["episode"]) or record["episode"] < 0:
        raise RecordError(f"episode must be a non-negative int, got {_show(record['episode'])}")
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
            raise RecordError(f"field {name} must be an array with a leading time axis")
        if length is None:
            length = arr.shape[0]
        if arr.shape != (length, *shape) or arr.dtype != dtype:
            raise RecordError(
                f"field {name} has shape {list(arr.shape)} and dtype {arr.dtype}, expected "
                f"shape {[length, *shape]} and dtype {dtype} (from the header and field obs)"
            )
    _check_flags(record, length)
    check_values(record, header["observation_space"], header["action_space"])
    return length


def check_values(fields: dict, observation_space: dict, action_space: dict) -> None:
    """Raise RecordError unless obs, action and reward [N, ...] hold values the spaces allow.

    A discrete value (action or observation) must lie in [0, n); Box values and rewards must be
    finite in float32 (`worldssm.spaces.first_nonfinite_row`: float64 values beyond float32's
    range are not finite there). Box bounds are not checked (see the module docstring). Shapes
    and dtypes must already match the spaces. The message names the field and the first
    offending row.
    """
    for name, space in (("obs", observation_space), ("action", action_space), ("reward", None)):
        values = fields[name]
        if space is not None and space["type"] == "discrete":
            try:
                check_batch(space, values, len(values), f"field {name}")
            except SpaceError as exc:
                raise RecordError(str(exc)) from exc
            continue
        row = first_nonfinite_row(values)
        if row is not None:
            raise RecordError(f"field {name}: row {row} contains NaN or infinity (in float32)")


def check_end(record: Any, records: int, steps: int) -> None:
    """Raise RecordError unless `record` is an end record counting `records` and `steps`."""
    if not isinstance(record, dict) or _kind(record) != "end":
        raise RecordError("not an end record")
    _check_fields(record, END_FIELDS, "end record")
    for name, count in (("records", records), ("steps", steps)):
        if not _is_int(record[name]) or record[name] != count:
            raise RecordError(
                f"the end record counts {_show(record[name])} {name}, the shard holds {count}"
            )


def _kind(record: dict) -> str | None:
    kind = record.get("kind")
    return kind if isinstance(kind, str) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: Any) -> str:
    """A short repr for error messages: a damaged field may hold a huge or deep structure."""
    return _short.repr(value)


def _check_fields(record: dict, fields: tuple[str, ...], what: str) -> None:
    missing = [f for f in fields if f not in record]
    if missing:
        raise RecordError(f"{what} is missing fields {missing}")
    extra = sorted(set(record) - set(fields))
    if extra:
        raise RecordError(f"{what} has unknown fields {_show(extra)}")


def _check_flags(record: dict, length: int) -> None:
    if length < 1:
        raise RecordError("steps record is empty (T = 0)")
    if record["is_first"][1:].any():
        raise RecordError("is_first is set after the first step of a segment")
    if record["is_last"][:-1].any():
        raise RecordError("is_last is set before the last step of a segment")
    if (record["is_terminal"] & ~record["is_last"]).any():
        raise RecordError("is_terminal is set on a step that is not is_last")


def encode_record(record: dict) -> bytes:
    """Frame one record: length prefix, CRC32 and msgpack payload.

    Raises:
        RecordError: the payload is above MAX_RECORD_BYTES (the message names the record).
        CodecError: the record holds something the codec cannot encode.
    """
    payload = codec.packb(record)
    if len(payload) > MAX_RECORD_BYTES:
        raise RecordError(
            f"{_describe(record)} encodes to {len(payload)} bytes, above the format's limit of "
            f"{MAX_RECORD_BYTES} (MAX_RECORD_BYTES); split it into records of at most "
            "`max_record_steps(header)` steps"
        )
    return RECORD_PREFIX.pack(len(payload), zlib.crc32(payload)) + payload


def _describe(record: Any) -> str:
    if not isinstance(record, dict):
        return f"a {type(record).__name__} instead of a record"
    kind = _kind(record)
    if kind == "steps":
        reward = record.get("reward")
        steps = reward.shape[0] if isinstance(reward, np.ndarray) and reward.ndim else "?"
        return (f"steps record of agent {_show(record.get('agent'))} episode "
                f"{_show(record.get('episode'))} ({steps} steps)")
    return f"{kind or 'unnamed'} record"


def max_record_steps(header: dict) -> int:
    """How many steps of `header`'s spaces fit in one steps record (at least 1)."""
    step_bytes = 4 + 3  # reward float32, three bool flags
    for name in ("observation_space", "action_space"):
        shape, dtype = space_step_layout(header[name])
        step_bytes += math.prod(shape) * dtype.itemsize
    return max(1, (MAX_RECORD_BYTES - _STEPS_OVERHEAD) // step_bytes)


def split_steps(record: dict, max_steps: int) -> list[dict]:
    """Cut a steps record into consecutive records of at most `max_steps` steps each.

    Episode flags stay on their steps (is_first on the first piece, is_last on the last), so
    the pieces stitch back into the same episode.
    """
    length = len(record["reward"])
    if length <= max_steps:
        return [record]
    return [
        {**record, **{name: record[name][a : a + max_steps] for name in STEP_FIELDS}}
        for a in range(0, length, max_steps)
    ]


def _temp_name(final: str) -> str:
    return f".{final}.{uuid.uuid4().hex[:12]}.tmp"


def temp_target(name: str) -> str | None:
    """The final file name a ShardWriter temp file called `name` was for; None if it is not one."""
    match = _TEMP_NAME.fullmatch(name)
    return match["final"] if match else None


class ShardWriter:
    """Write one shard atomically: to a hidden temp file, renamed into place by `close()`.

    The temp name (`.<name>.<random>.tmp`) does not end in `.wsr`, so an interrupted writer never
    leaves a file that a reader would load. Use as a context manager: leaving the block with an
    exception deletes the temp file instead of publishing it. A record that is refused leaves
    the writer as it was; a failing disk (full, over quota, an I/O error) aborts the writer,
    deletes the temp file and raises `WorldssmError` naming the shard.

    Args:
        path: final file path (should end in `.wsr`).
        header: a header record of the current version (see `make_header`); validated before
            anything is written.

    Raises:
        RecordError: an invalid header.
        WorldssmError: the temp file cannot be created or written.
    """

    def __init__(self, path, header: dict):
        check_header(header)
        self.path = Path(path)
        self.header = header
        self.num_records = 0
        self.num_steps = 0
        self._tmp = self.path.with_name(_temp_name(self.path.name))
        self._file = None
        start = MAGIC + encode_record(header)
        try:
            self._file = open(self._tmp, "xb")
        except OSError as exc:
            raise _disk_error(self.path, exc) from exc
        self._append(start)

    def write(self, record: dict) -> None:
        """Append one steps record (validated against the header; see `check_steps`).

        Raises:
            RecordError: the record is invalid or too big; nothing was written.
            WorldssmError: the disk failed; the writer is aborted.
        """
        if self._file is None:
            raise ValueError(f"ShardWriter for {self.path} is closed")
        try:
            steps = check_steps(record, self.header)
        except RecordError as exc:
            raise RecordError(f"{self.path}: {_describe(record)}: {exc}") from exc
        try:
            data = encode_record(record)
        except RecordError as exc:  # already names the record
            raise RecordError(f"{self.path}: {exc}") from exc
        self._append(data)
        self.num_records += 1
        self.num_steps += steps

    def _append(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            self.abort()
            raise _disk_error(self.path, exc) from exc

    def close(self) -> Path:
        """Write the end record, flush, fsync and atomically rename the shard into place.

        Returns:
            The final path.

        Raises:
            WorldssmError: the disk failed; the temp file is deleted and nothing is published.
        """
        if self._file is None:
            raise ValueError(f"ShardWriter for {self.path} is already closed")
        end = {"kind": "end", "records": self.num_records, "steps": self.num_steps}
        self._append(encode_record(end))
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self.abort()
            raise _disk_error(self.path, exc) from exc
        self._file = None
        try:
            _fsync_dir(self.path.parent)
        except OSError as exc:
            raise WorldssmError(f"{self.path} was written, but syncing its directory failed "
                                f"({exc.strerror or exc}), so it may not survive a crash") from exc
        return self.path

    def abort(self) -> None:
        """Discard the shard: close and delete the temp file (no-op after close).

        Best effort, and never raises, so the error that made the caller abort is the one that
        propagates (a full disk fails the flush inside `close` again). A temp file that cannot be
        deleted is named in a warning; `collect` deletes such files on its next start.
        """
        file, self._file = self._file, None
        if file is None:
            return
        try:
            file.close()
        except Exception:  # cleanup after the first error, which is the one the caller raises
            pass
        try:
            self._tmp.unlink(missing_ok=True)
        except OSError as exc:
            warnings.warn(f"could not delete the temporary shard file {self._tmp}: {exc}", stacklevel=2)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _disk_error(path: Path, exc: OSError) -> WorldssmError:
    if exc.errno == errno.ENOSPC:
        why = "the disk is full"
    elif exc.errno == getattr(errno, "EDQUOT", None):
        why = "the disk quota is exceeded"
    else:
        why = exc.strerror or str(exc)
    return WorldssmError(f"cannot write the shard {path}: {why}; nothing was written there")


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
    """Yield `(offset, record)` for the header and every steps record of a shard, validating each.

    The end record is checked, not yielded. A version-1 shard (no end record) is read with a
    `LegacyShardWarning` naming the file.

    Args:
        path: a `.wsr` file.

    Yields:
        The byte offset where the record's length prefix starts, and the decoded record.

    Raises:
        DataError: not a regular file, bad magic, truncation, a declared length above
            MAX_RECORD_BYTES, CRC mismatch, undecodable payload, unknown format_version or kind,
            missing fields, arrays disagreeing with the header, values its spaces forbid, a
            missing or wrong end record, or bytes after it.
        WorldssmError: the file cannot be opened or read.
    """
    path = Path(path)
    with _open_regular(path) as f:
        try:
            yield from _iter_records(f, path)
        except OSError as exc:
            raise WorldssmError(f"cannot read the shard {path}: {exc.strerror or exc}") from exc


def _open_regular(path: Path):
    # O_NONBLOCK: opening a FIFO must not wait for a writer; it has no effect on regular files.
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise WorldssmError(f"cannot open the shard {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(path, 0, "not a regular file (a shard is a plain file)")
    return os.fdopen(fd, "rb")


def _iter_records(f, path: Path) -> Iterator[tuple[int, dict]]:
    size = os.fstat(f.fileno()).st_size
    if f.read(len(MAGIC)) != MAGIC:
        raise DataError(path, 0, f"not a worldssm rollout shard (magic is not {MAGIC!r})")
    offset = len(MAGIC)
    if offset >= size:
        raise DataError(path, offset, "shard has no header record")
    header = _read_record(f, path, offset, size)
    _checked(path, offset, check_header, header, READ_VERSIONS)
    if header["format_version"] == 1:
        warnings.warn(
            f"{path}: a format version 1 shard, which has no end record, so a copy cut at a "
            "record boundary loads without an error; collect it again to get version 2",
            LegacyShardWarning,
            stacklevel=3,
        )
    yield offset, header
    records = steps = 0
    offset = f.tell()
    while offset < size:
        record = _read_record(f, path, offset, size)
        if header["format_version"] >= 2 and isinstance(record, dict) and _kind(record) == "end":
            _checked(path, offset, check_end, record, records, steps)
            end = f.tell()
            if end < size:
                raise DataError(path, end, f"{size - end} bytes follow the end record (it must be last)")
            return
        steps += _checked(path, offset, check_steps, record, header)
        records += 1
        yield offset, record
        offset = f.tell()
    if header["format_version"] >= 2:
        raise DataError(
            path, offset, f"the shard ends after {records} steps records without its end record "
            "(the file was cut short)"
        )


def _checked(path: Path, offset: int, check, *args):
    try:
        return check(*args)
    except RecordError as exc:
        raise DataError(path, offset, str(exc)) from exc


def _read_record(f, path: Path, offset: int, size: int) -> Any:
    prefix = f.read(RECORD_PREFIX.size)
    if len(prefix) < RECORD_PREFIX.size:
        raise DataError(path, offset, f"truncated record prefix ({len(prefix)} of 8 bytes)")
    length, crc = RECORD_PREFIX.unpack(prefix)
    if length > MAX_RECORD_BYTES:
        raise DataError(
            path, offset, f"record declares {length} bytes, above the format's limit of "
            f"{MAX_RECORD_BYTES} (a damaged length prefix)"
        )
    available = size - offset - RECORD_PREFIX.size
    if length > available:
        raise DataError(path, offset, f"truncated record: needs {length} bytes, {available} left")
    payload = f.read(length)
    if len(payload) != length:
        raise DataError(path, offset, f"truncated record: read {len(payload)} of {length} bytes")
    if zlib.crc32(payload) != crc:
        raise DataError(path, offset, "CRC32 mismatch: the record is damaged")
    try:
        return codec.unpackb(payload, RECORD_LIMITS)
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
