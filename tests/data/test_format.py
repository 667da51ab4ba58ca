import numpy as np
import pytest

from worldssm import codec
from worldssm.data.format import (
    MAGIC,
    ShardWriter,
    encode_record,
    make_header,
    read_shard,
)
from worldssm.errors import DataError

from ._helpers import box_space, steps, vector_header


def _write(path, header, records):
    with ShardWriter(path, header) as writer:
        for record in records:
            writer.write(record)
    return path


def _offsets(header, records):
    """Byte offsets of each record from the layout: magic, then per record 8 bytes + payload."""
    offsets, pos = [], len(MAGIC)
    for record in [header, *records]:
        offsets.append(pos)
        pos += 8 + len(codec.packb(record))
    return offsets, pos


def _raw_shard(path, header, records):
    path.write_bytes(MAGIC + b"".join(encode_record(r) for r in [header, *records]))
    return path


def test_round_trip(tmp_path):
    header = vector_header()
    records = [steps("a", 0, 4), steps("b", 3, 2, last=False)]
    path = _write(tmp_path / "x.wsr", header, records)
    got_header, got = read_shard(path)
    assert got_header["env_id"] == "Test-v0" and got_header["agent_ids"] == ["a", "b"]
    np.testing.assert_array_equal(got_header["observation_space"]["high"], np.ones(3, np.float32))
    assert len(got) == 2
    for want, have in zip(records, got):
        assert have.keys() == want.keys()
        for key, value in want.items():
            np.testing.assert_array_equal(have[key], value)
            if isinstance(value, np.ndarray):
                assert have[key].dtype == value.dtype
    assert path.stat().st_size == _offsets(header, records)[1]


def test_truncated_file_names_file_and_offset(tmp_path):
    header, records = vector_header(), [steps("a", 0, 4), steps("a", 1, 3)]
    path = _write(tmp_path / "t.wsr", header, records)
    offsets, size = _offsets(header, records)
    data = path.read_bytes()
    for cut, words in [
        (size - 5, "truncated record: needs"),
        (offsets[2] + 3, "truncated record prefix"),
    ]:
        path.write_bytes(data[:cut])
        with pytest.raises(DataError, match=words) as info:
            read_shard(path)
        assert info.value.path == str(path)
        assert info.value.offset == offsets[2]


def test_flipped_payload_byte_is_a_crc_error(tmp_path):
    header, records = vector_header(), [steps("a", 0, 4), steps("a", 1, 3)]
    path = _write(tmp_path / "c.wsr", header, records)
    offsets, _ = _offsets(header, records)
    data = bytearray(path.read_bytes())
    data[offsets[1] + 8 + 20] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="CRC32 mismatch") as info:
        read_shard(path)
    assert (info.value.path, info.value.offset) == (str(path), offsets[1])


def test_bad_magic_is_offset_zero(tmp_path):
    path = tmp_path / "m.wsr"
    path.write_bytes(b"NOTROLLS" + encode_record(vector_header()))
    with pytest.raises(DataError, match="magic") as info:
        read_shard(path)
    assert info.value.offset == 0


def test_unknown_format_version(tmp_path):
    header = dict(vector_header(), format_version=2)
    with pytest.raises(ValueError, match="format_version"):
        ShardWriter(tmp_path / "never.wsr", header)
    path = _raw_shard(tmp_path / "v.wsr", header, [])
    with pytest.raises(DataError, match="unknown format_version 2") as info:
        read_shard(path)
    assert (info.value.path, info.value.offset) == (str(path), len(MAGIC))


def _bad_obs_shape():
    record = steps("a", 0, 3)
    record["obs"] = np.zeros((3, 4), np.float32)
    return record


def _bad_obs_dtype():
    record = steps("a", 0, 3)
    record["obs"] = record["obs"].astype(np.float64)
    return record


def _ragged():
    record = steps("a", 0, 3)
    record["reward"] = record["reward"][:2]
    return record


def _missing():
    record = steps("a", 0, 3)
    del record["is_terminal"]
    return record


def _unknown_kind():
    return dict(steps("a", 0, 3), kind="stats")


def _unknown_agent():
    return steps("zed", 0, 3)


def _first_inside():
    record = steps("a", 0, 3)
    record["is_first"][1] = True
    return record


@pytest.mark.parametrize(
    "make_bad, words",
    [
        (_bad_obs_shape, "field obs has shape \\[3, 4\\]"),
        (_bad_obs_dtype, "field obs .* dtype float64"),
        (_ragged, "field reward has shape \\[2\\]"),
        (_missing, "missing fields \\['is_terminal'\\]"),
        (_unknown_kind, "unknown record kind 'stats'"),
        (_unknown_agent, "agent 'zed' is not in the header"),
        (_first_inside, "is_first is set after the first step"),
    ],
)
def test_records_disagreeing_with_header_or_themselves(tmp_path, make_bad, words):
    header, good, bad = vector_header(), steps("b", 0, 2), make_bad()
    writer = ShardWriter(tmp_path / "w.wsr", header)
    with pytest.raises(ValueError):
        writer.write(bad)
    writer.abort()
    path = _raw_shard(tmp_path / "bad.wsr", header, [good, bad])
    offsets, _ = _offsets(header, [good, bad])
    with pytest.raises(DataError, match=words) as info:
        read_shard(path)
    assert (info.value.path, info.value.offset) == (str(path), offsets[2])


def test_interrupted_writer_leaves_no_shard(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "x.wsr", vector_header()) as writer:
            writer.write(steps("a", 0, 3))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    # A writer that never closes (a crashed process) leaves only a hidden temp file.
    writer = ShardWriter(tmp_path / "y.wsr", vector_header())
    writer.write(steps("a", 0, 3))
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and names[0].startswith(".y.wsr.") and names[0].endswith(".tmp")
    assert list(tmp_path.glob("*.wsr")) == []
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["y.wsr"]
    assert len(read_shard(tmp_path / "y.wsr")[1]) == 1


def test_header_validation():
    with pytest.raises(ValueError, match="agent_ids contains duplicates"):
        make_header("E", box_space([2]), box_space([1]), ["a", "a"], {})
    bad_space = box_space([2])
    bad_space["low"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="observation_space: box low must be an array of shape"):
        make_header("E", bad_space, box_space([1]), ["a"], {})
