import struct

import msgpack
import numpy as np
import pytest

from worldssm import codec
from worldssm.codec import DTYPE_CODES, EXT_NDARRAY, CodecError, packb, unpackb

SHAPES = [(), (0,), (4,), (2, 0, 3), (2, 3, 4)]


def _sample(dtype: str, shape) -> np.ndarray:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 100, size=shape)
    return np.asarray(values % 2 == 0) if dtype == "bool" else np.asarray(values).astype(dtype)


@pytest.mark.parametrize("dtype", list(DTYPE_CODES))
@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_every_dtype_and_shape(dtype, shape):
    arr = _sample(dtype, shape)
    out = unpackb(packb({"x": [arr, {"y": arr}]}))
    for got in (out["x"][0], out["x"][1]["y"]):
        assert got.dtype == np.dtype(dtype)
        assert got.shape == shape
        np.testing.assert_array_equal(got, arr)
        assert got.flags.writeable and got.flags.c_contiguous and got.flags.owndata


def test_payload_layout_is_documented_one():
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    ext = msgpack.unpackb(packb(arr), raw=False)
    assert ext.code == EXT_NDARRAY == 42
    assert ext.data == bytes([DTYPE_CODES["int16"], 2]) + struct.pack("<2I", 2, 3) + arr.tobytes()


def test_big_endian_and_non_contiguous_inputs_are_normalised():
    arr = np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2]
    got = unpackb(packb(arr))
    assert got.dtype == np.dtype("<i4")
    np.testing.assert_array_equal(got, arr)
    fortran = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(unpackb(packb(fortran)), fortran)


def test_numpy_scalars_become_python_scalars():
    out = unpackb(packb([np.float32(1.5), np.int64(-3), np.bool_(True), np.uint8(7)]))
    assert out == [1.5, -3, True, 7]
    assert [type(v) for v in out] == [float, int, bool, int]


@pytest.mark.parametrize(
    "bad", [np.array([object()], dtype=object), np.zeros(2, np.complex64), np.zeros(2, "U3"), 1j]
)
def test_unsupported_values_are_rejected(bad):
    with pytest.raises(CodecError):
        packb({"x": bad})


def _ext(payload: bytes, code: int = EXT_NDARRAY) -> bytes:
    return msgpack.packb(msgpack.ExtType(code, payload))


@pytest.mark.parametrize(
    "payload, words",
    [
        (bytes([99, 1]) + struct.pack("<I", 2) + b"\0\0", "unknown array dtype code 99"),
        (bytes([DTYPE_CODES["float32"]]), "shorter than its 2-byte header"),
        (bytes([DTYPE_CODES["float32"], 2]) + struct.pack("<I", 2), "too short for 2 dims"),
        (
            bytes([DTYPE_CODES["float32"], 1]) + struct.pack("<I", 2) + b"\0" * 7,
            "needs 8 data bytes",
        ),
        (bytes([DTYPE_CODES["int8"], 1]) + struct.pack("<I", 2) + b"\0" * 3, "payload has 3"),
        (bytes([DTYPE_CODES["int8"], 200]), "exceeds the maximum"),
    ],
)
def test_bad_payloads_are_rejected_with_reason(payload, words):
    with pytest.raises(CodecError, match=words):
        unpackb(_ext(payload))


def test_unknown_ext_code_and_garbage_are_rejected():
    with pytest.raises(CodecError, match="unknown msgpack ext type 7"):
        unpackb(_ext(b"abc", code=7))
    with pytest.raises(CodecError):
        unpackb(packb([1, 2])[:-1])
    with pytest.raises(CodecError):
        unpackb(packb(1) + b"\x01")
    assert issubclass(CodecError, ValueError)


def test_codec_is_a_leaf_module():
    source = open(codec.__file__).read()
    imports = {
        line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))
    }
    assert imports <= {"__future__", "dataclasses", "math", "struct", "typing", "msgpack", "numpy"}
    assert "import pickle" not in source and "pickle.load" not in source


@pytest.mark.parametrize(
    "value, limit",
    [
        ("s" * 65, "max_str_len"),
        (b"b" * 65, "max_bin_len"),
        (list(range(17)), "max_array_len"),
        ({f"k{i}": i for i in range(17)}, "max_map_len"),
        (np.zeros(300, np.float32), "max_ext_len"),
    ],
)
def test_limits_refuse_declared_lengths_above_them(value, limit):
    tight = codec.Limits(max_str_len=64, max_bin_len=64, max_array_len=16, max_map_len=16, max_ext_len=1024)
    data = packb({"x": value})
    with pytest.raises(CodecError, match=limit):
        unpackb(data, tight)
    assert type(unpackb(data)["x"]) is type(value)
    smaller = packb({"x": value[:16] if not isinstance(value, dict) else dict(list(value.items())[:16])})
    assert len(unpackb(smaller, tight)["x"]) == 16
    with pytest.raises(CodecError, match=f"message is {len(data)} bytes, above the limit of {len(data) - 1}"):
        unpackb(data, codec.Limits(max_buffer_size=len(data) - 1))


def test_a_declared_length_is_refused_before_allocating():
    """A 9-byte message claiming a 4 GiB str, bin, ext, array or map: msgpack checks the length
    against the limits (capped at the message's size) before it allocates."""
    for head in (b"\xdb", b"\xc6", b"\xc9", b"\xdd", b"\xdf"):
        data = head + b"\xff\xff\xff\xff" + b"\x07" * (head == b"\xc9") + b"\0\0\0"
        with pytest.raises(CodecError, match="exceeds max_|incomplete"):
            unpackb(data, codec.Limits(max_buffer_size=2**40, max_str_len=2**40, max_bin_len=2**40,
                                       max_array_len=2**40, max_map_len=2**40, max_ext_len=2**40))


def test_large_messages_decode_with_the_default_limits():
    arr = np.arange(2**23, dtype=np.float32)  # 32 MiB, above every count limit
    got = unpackb(packb({"names": ["a"] * 100_000, "x": arr}))
    np.testing.assert_array_equal(got["x"], arr)
    assert len(got["names"]) == 100_000
    with pytest.raises(ValueError, match="Limits.max_map_len must be a positive int"):
        codec.Limits(max_map_len=0)


def test_deep_nesting_is_a_codec_error(monkeypatch):
    with pytest.raises(CodecError, match="invalid msgpack data"):
        unpackb(b"\x91" * 100_000 + b"\xc0")
    with pytest.raises(CodecError, match="invalid msgpack data"):
        unpackb(b"\x81\xa1k" * 100_000 + b"\xc0")

    # msgpack's pure-Python fallback (PyPy, or MSGPACK_PUREPYTHON) recurses per level; older
    # versions let RecursionError through.
    def recursive(data, **kwargs):
        return recursive(data, **kwargs)

    monkeypatch.setattr(codec.msgpack, "unpackb", recursive)
    with pytest.raises(CodecError, match="nested too deeply"):
        unpackb(b"\x91\xc0")


def test_map_keys_must_be_strings():
    with pytest.raises(CodecError, match="not allowed for map key"):
        unpackb(msgpack.packb({1: 2}))


def test_an_empty_array_with_dims_too_big_for_numpy():
    payload = bytes([DTYPE_CODES["float32"], 3]) + struct.pack("<3I", 0, 2**32 - 1, 2**32 - 1)
    with pytest.raises(CodecError, match="array shape \\[0, 4294967295, 4294967295\\] of dtype float32 is too big"):
        unpackb(_ext(payload))
    got = unpackb(_ext(bytes([DTYPE_CODES["uint8"], 2]) + struct.pack("<2I", 0, 2**32 - 1)))
    assert got.shape == (0, 2**32 - 1)
