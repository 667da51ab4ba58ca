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
    assert imports <= {"__future__", "math", "struct", "typing", "msgpack", "numpy"}
    assert "import pickle" not in source and "pickle.load" not in source
