"""msgpack with numpy arrays, never pickle.

Arrays travel as a project-owned msgpack ext type (`EXT_NDARRAY`, code 42) whose payload is::

    u8  dtype code (see `DTYPE_CODES`; an allow-list, no object or structured dtypes)
    u8  ndim (at most `MAX_NDIM`)
    ndim x u32 little-endian dims
    raw little-endian C-order element bytes

Everything else is plain msgpack (`use_bin_type=True`, `raw=False`, string map keys). NumPy
scalars are packed as the equivalent Python scalar. Decoding checks the ext code, dtype code,
ndim, and that the byte length matches the shape before touching the bytes, and raises
`CodecError` saying what is wrong. Decoded arrays are writeable copies that own their memory.

Decoding is bounded (`Limits`): a message longer than `max_buffer_size` is refused before
msgpack sees it, and msgpack refuses any str, bin, ext, array or map whose declared length is
above its limit, or above what the message's own length could hold, before allocating it. A
forged message therefore costs Python objects in proportion to its own length (an array of n
one-byte nils is n pointers) and never more entries than its `Limits` allow. Nesting deeper
than msgpack's stack (1,024 levels in the C extension; the recursion limit in the pure-Python
fallback) is a `CodecError` too. msgpack decodes ext code -1 itself, as a `msgpack.Timestamp`
(this cannot be switched off), so readers check the types of what they receive.

This module is a leaf: it imports only numpy and msgpack, so the engine can reuse it for state
snapshots on a machine without gymnasium.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

EXT_NDARRAY = 42
MAX_NDIM = 32

# Codes are part of the on-disk format: never renumber, only append.
DTYPE_CODES: dict[str, int] = {
    "bool": 1,
    "uint8": 2,
    "int8": 3,
    "uint16": 4,
    "int16": 5,
    "uint32": 6,
    "int32": 7,
    "int64": 8,
    "float16": 9,
    "float32": 10,
    "float64": 11,
}
_CODE_TO_DTYPE: dict[int, np.dtype] = {
    code: np.dtype(name).newbyteorder("<") for name, code in DTYPE_CODES.items()
}
# Keyed by the little-endian dtype string ("<f4", "|u1", "|b1") so big-endian inputs map too.
_LE_STR_TO_CODE: dict[str, int] = {dt.str: code for code, dt in _CODE_TO_DTYPE.items()}
_NATIVE: dict[int, np.dtype] = {code: dt.newbyteorder("=") for code, dt in _CODE_TO_DTYPE.items()}
_HEAD = struct.Struct("<BB")
_MAX_DIM = 2**32 - 1
_MAX_BYTES = np.iinfo(np.intp).max
_HEADS = [struct.Struct(f"<BB{n}I") for n in range(MAX_NDIM + 1)]  # header + dims, per ndim
_DIMS = [struct.Struct(f"<{n}I") for n in range(MAX_NDIM + 1)]


class CodecError(ValueError):
    """Data cannot be encoded, or bytes are not a valid worldssm msgpack message."""


@dataclass(frozen=True)
class Limits:
    """Upper bounds on one `unpackb` call; each length is also capped at the message's own size.

    The defaults are generous for the messages worldssm sends between processes, which carry
    their bulk as ndarray ext payloads (decoded with one copy, so str, bin and ext are bounded by
    the message size, 16 GiB), while plain msgpack arrays (4 Mi elements, 8 bytes of pointers
    each) and maps (1 Mi entries) hold ids, names and small structures. Rollout shard records
    use tighter ones (`worldssm.data.format.RECORD_LIMITS`).

    Attributes:
        max_buffer_size: bytes in the whole message.
        max_str_len: bytes in one str.
        max_bin_len: bytes in one bin.
        max_array_len: elements in one msgpack array.
        max_map_len: entries in one map.
        max_ext_len: bytes in one ext payload (an ndarray's header and data).
    """

    max_buffer_size: int = 2**34
    max_str_len: int = 2**24
    max_bin_len: int = 2**34
    max_array_len: int = 2**22
    max_map_len: int = 2**20
    max_ext_len: int = 2**34

    def __post_init__(self):
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")
        # Up to this size msgpack's own caps (the message length, half of it for maps) are the
        # tighter ones, so unpackb leaves them to msgpack (building keyword arguments costs 0.2 us
        # of a 2.6 us decode on the tick path).
        small = min(self.max_str_len, self.max_bin_len, self.max_array_len, 2 * self.max_map_len,
                    self.max_ext_len, self.max_buffer_size)
        object.__setattr__(self, "_small", small)

    def caps(self, size: int) -> dict[str, int]:
        """msgpack's length keyword arguments for a message of `size` bytes."""
        return {
            "max_str_len": min(self.max_str_len, size),
            "max_bin_len": min(self.max_bin_len, size),
            "max_array_len": min(self.max_array_len, size),
            "max_map_len": min(self.max_map_len, size // 2),
            "max_ext_len": min(self.max_ext_len, size),
        }


DEFAULT_LIMITS = Limits()


def dtype_code(dtype) -> int:
    """The wire code of an allow-listed dtype.

    Args:
        dtype: anything `np.dtype` accepts; byte order is ignored.

    Raises:
        CodecError: the dtype is not in the allow-list (object, structured, complex, ...).
    """
    dt = np.dtype(dtype)
    code = _LE_STR_TO_CODE.get(dt.newbyteorder("<").str) if dt.fields is None else None
    if code is None:
        allowed = ", ".join(DTYPE_CODES)
        raise CodecError(f"dtype {dt} is not supported (allowed: {allowed})")
    return code


def encode_array(arr: np.ndarray) -> bytes:
    """Encode one array as the ext payload described in the module docstring.

    Args:
        arr: any shape (0-d and empty included), an allow-listed dtype.

    Returns:
        The payload bytes (without the msgpack ext framing).
    """
    code = _LE_STR_TO_CODE.get(arr.dtype.str)  # the common case: a little-endian allowed dtype
    if code is None:
        code = dtype_code(arr.dtype)
    shape = arr.shape
    ndim = len(shape)
    if ndim > MAX_NDIM:
        raise CodecError(f"array has {ndim} dims; at most {MAX_NDIM} are supported")
    if ndim and max(shape) > _MAX_DIM:
        raise CodecError(f"array shape {shape} has a dim that does not fit in u32")
    head = _HEADS[ndim].pack(code, ndim, *shape)
    if arr.size and arr.ndim and arr.flags.c_contiguous and arr.dtype.str == _CODE_TO_DTYPE[code].str:
        return b"".join((head, arr.data.cast("B")))  # one copy: join reads the array's buffer
    # np.asarray keeps 0-d arrays 0-d (np.ascontiguousarray would make them 1-d).
    le = np.asarray(arr, dtype=_CODE_TO_DTYPE[code], order="C")
    return b"".join((head, le.reshape(-1).view(np.uint8).data))


def decode_array(payload: bytes) -> np.ndarray:
    """Decode an ext payload written by `encode_array`.

    Args:
        payload: the ext data.

    Returns:
        A writeable, C-contiguous, native-byte-order array that owns its memory.

    Raises:
        CodecError: unknown dtype code, bad ndim, or byte length that disagrees with the shape.
    """
    if len(payload) < _HEAD.size:
        raise CodecError(f"array payload is {len(payload)} bytes, shorter than its 2-byte header")
    code, ndim = _HEAD.unpack_from(payload, 0)
    dt = _CODE_TO_DTYPE.get(code)
    if dt is None:
        raise CodecError(f"unknown array dtype code {code}")
    if ndim > MAX_NDIM:
        raise CodecError(f"array ndim {ndim} exceeds the maximum {MAX_NDIM}")
    dims_end = _HEAD.size + 4 * ndim
    if len(payload) < dims_end:
        raise CodecError(f"array payload is {len(payload)} bytes, too short for {ndim} dims")
    shape = _DIMS[ndim].unpack_from(payload, _HEAD.size)
    count = math.prod(shape)
    # An empty array needs no bytes, but NumPy still refuses a shape whose nonzero dims overflow
    # its size type (a nonempty one is bounded by the payload length checked below).
    if count == 0 and math.prod(d or 1 for d in shape) * dt.itemsize > _MAX_BYTES:
        raise CodecError(f"array shape {list(shape)} of dtype {dt.name} is too big for NumPy")
    expected = count * dt.itemsize
    got = len(payload) - dims_end
    if got != expected:
        raise CodecError(
            f"array of dtype {dt.name} and shape {list(shape)} needs {expected} data bytes, "
            f"payload has {got}"
        )
    flat = np.frombuffer(payload, dtype=dt, count=count, offset=dims_end)
    native = _NATIVE[code]
    shaped = flat.reshape(shape)
    return shaped.copy() if native == dt else shaped.astype(native)  # a writeable copy we own


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return msgpack.ExtType(EXT_NDARRAY, encode_array(obj))
    if isinstance(obj, np.generic):
        if obj.dtype.kind not in "biuf":
            raise CodecError(f"numpy scalar of dtype {obj.dtype} is not supported")
        return obj.item()
    raise CodecError(f"cannot encode object of type {type(obj).__name__}")


def _ext_hook(code: int, data: bytes) -> np.ndarray:
    if code != EXT_NDARRAY:
        raise CodecError(f"unknown msgpack ext type {code}")
    return decode_array(data)


def packb(obj: Any) -> bytes:
    """Serialize `obj` (dicts, lists, str, bytes, numbers, None, numpy arrays and scalars).

    Tuples come back as lists; dict keys should be str.

    Raises:
        CodecError: an unsupported type or dtype anywhere in `obj`.
    """
    try:
        return msgpack.packb(obj, default=_default, use_bin_type=True)
    except CodecError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode: {exc}") from exc
    except RecursionError as exc:
        raise CodecError("cannot encode: the object is nested too deeply") from exc


def unpackb(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Deserialize bytes written by `packb`; arrays come back as writeable numpy arrays.

    Args:
        data: one complete message (bytes or any buffer).
        limits: what the message may declare (see `Limits`); lengths are further capped at
            len(data), as msgpack itself does when no limit is given.

    Raises:
        CodecError: the bytes are not one complete valid message (trailing bytes included), a
            declared length is above its limit, or the nesting is too deep.
    """
    size = len(data)
    try:
        if size <= limits._small:  # msgpack's own caps are the tighter ones
            return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=True)
        if size > limits.max_buffer_size:
            raise CodecError(f"message is {size} bytes, above the limit of {limits.max_buffer_size}")
        caps = limits.caps(size)
        return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=True, **caps)
    except CodecError:
        raise
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise CodecError(f"invalid msgpack data: {type(exc).__name__}: {exc}") from exc
    except RecursionError as exc:
        raise CodecError("invalid msgpack data: nested too deeply") from exc
