import errno
import os
import resource
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from worldssm import codec
from worldssm.data import format as fmt
from worldssm.data.format import (
    MAGIC,
    MAX_RECORD_BYTES,
    RECORD_PREFIX,
    LegacyShardWarning,
    RecordError,
    ShardWriter,
    encode_record,
    make_header,
    max_record_steps,
    read_shard,
    split_steps,
)
from worldssm.errors import DataError, WorldssmError

from ._helpers import FullDisk, box_space, steps, vector_header

FIXTURES = Path(__file__).parent / "fixtures"


def _write(path, header, records):
    with ShardWriter(path, header) as writer:
        for record in records:
            writer.write(record)
    return path


def _end(records):
    return {"kind": "end", "records": len(records), "steps": sum(len(r["reward"]) for r in records)}


def _offsets(header, records):
    """Byte offsets of each record from the layout: magic, then per record 8 bytes + payload;
    the last offset is the end record's, then the file size."""
    offsets, pos = [], len(MAGIC)
    for record in [header, *records, _end(records)]:
        offsets.append(pos)
        pos += 8 + len(codec.packb(record))
    return offsets, pos


def _frame(record):
    """Frame a record with a valid CRC, bypassing the writer's checks."""
    payload = codec.packb(record)
    return RECORD_PREFIX.pack(len(payload), fmt.zlib.crc32(payload)) + payload


def _raw_shard(path, header, records, end=True):
    tail = [_end(records)] if end else []
    path.write_bytes(MAGIC + b"".join(_frame(r) for r in [header, *records, *tail]))
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
        (offsets[3] - 5, "truncated record: needs"),
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
    header = dict(vector_header(), format_version=3)
    with pytest.raises(ValueError, match="format_version"):
        ShardWriter(tmp_path / "never.wsr", header)
    path = _raw_shard(tmp_path / "v.wsr", header, [])
    with pytest.raises(DataError, match="unknown format_version 3") as info:
        read_shard(path)
    assert (info.value.path, info.value.offset) == (str(path), len(MAGIC))
    # The writer writes only the current version: a version-1 header would get an end record.
    with pytest.raises(RecordError, match="unknown format_version 1 \\(expected 2\\)"):
        ShardWriter(tmp_path / "never.wsr", dict(vector_header(), format_version=1))
    assert list(tmp_path.iterdir()) == [path]


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
    with pytest.raises(RecordError, match=words):
        writer.write(bad)
    assert writer.num_records == writer.num_steps == 0
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
    assert fmt.temp_target(names[0]) == "y.wsr" and fmt.temp_target("y.wsr") is None
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


def test_a_cut_at_a_record_boundary_is_an_error(tmp_path):
    header, records = vector_header(), [steps("a", 0, 4), steps("a", 1, 3)]
    path = _write(tmp_path / "cut.wsr", header, records)
    offsets, size = _offsets(header, records)
    assert path.stat().st_size == size
    data = path.read_bytes()
    # Every record boundary: after the header, after each steps record, before the end record.
    for cut in offsets[1:]:
        path.write_bytes(data[:cut])
        with pytest.raises(DataError, match="without its end record") as info:
            read_shard(path)
        assert (info.value.path, info.value.offset) == (str(path), cut)


def test_the_end_record_is_last_and_counts_the_shard(tmp_path):
    header, records = vector_header(), [steps("a", 0, 4), steps("a", 1, 3)]
    path = _write(tmp_path / "e.wsr", header, records)
    offsets, size = _offsets(header, records)
    data = path.read_bytes()
    path.write_bytes(data + _frame(steps("b", 0, 2)))
    with pytest.raises(DataError, match=r"\d+ bytes follow the end record") as info:
        read_shard(path)
    assert info.value.offset == size
    path.write_bytes(data + b"\0")
    with pytest.raises(DataError, match="1 bytes follow the end record"):
        read_shard(path)
    for end, words in [
        ({"kind": "end", "records": 1, "steps": 7}, "counts 1 records, the shard holds 2"),
        ({"kind": "end", "records": 2, "steps": 8}, "counts 8 steps, the shard holds 7"),
        ({"kind": "end", "records": True, "steps": 7}, "counts True records"),
        ({"kind": "end", "records": 2}, "missing fields \\['steps'\\]"),
        ({"kind": "end", "records": 2, "steps": 7, "more": 1}, "unknown fields"),
    ]:
        path.write_bytes(data[: offsets[-1]] + _frame(end))
        with pytest.raises(DataError, match=words) as info:
            read_shard(path)
        assert (info.value.path, info.value.offset) == (str(path), offsets[-1])
    empty = _write(tmp_path / "empty.wsr", header, [])
    assert read_shard(empty)[1] == []


def _legacy_copies(tmp_path):
    out = tmp_path / "legacy"
    out.mkdir()
    for name in ("v1-vector.wsr", "v1-image.wsr"):
        (out / name).write_bytes((FIXTURES / name).read_bytes())
    return out


def test_version_1_shards_load_with_one_warning_per_file(tmp_path):
    """The fixtures were written by worldssm at 492ded1, before end records (see their README)."""
    out = _legacy_copies(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        header, records = read_shard(out / "v1-vector.wsr")
        image_header, image_records = read_shard(out / "v1-image.wsr")
    assert [w.category for w in caught] == [LegacyShardWarning] * 2
    assert str(out / "v1-vector.wsr") in str(caught[0].message)
    assert str(out / "v1-image.wsr") in str(caught[1].message)
    assert header["format_version"] == 1 and [r["agent"] for r in records] == ["a", "b", "a"]
    np.testing.assert_array_equal(records[2]["obs"][:, 0], [3, 4])
    assert image_header["action_space"] == {"type": "discrete", "n": 3}
    assert image_records[0]["obs"].dtype == np.uint8 and image_records[0]["action"].tolist() == [2, 1, 0]
    from worldssm.data import RolloutDataset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError, match="env_id .Test-v0. differs"):
            RolloutDataset.load(out)
        (out / "v1-image.wsr").unlink()
        assert RolloutDataset.load(out).num_steps == 7
    assert [str(out / n) in str(w.message) for w, n in
            zip(caught, ["v1-image.wsr", "v1-vector.wsr", "v1-vector.wsr"])] == [True] * 3
    assert len(caught) == 3, "one warning per file per load"
    # Version 1 has no end record, so an "end" kind is not one of its records.
    data = (FIXTURES / "v1-vector.wsr").read_bytes()
    (out / "v1-vector.wsr").write_bytes(data + _frame({"kind": "end", "records": 3, "steps": 7}))
    with pytest.warns(LegacyShardWarning), pytest.raises(DataError, match="unknown record kind 'end'"):
        read_shard(out / "v1-vector.wsr")


def _peak_growth(fn):
    """(peak Python allocation in bytes, growth of max RSS in bytes) while running fn."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before


@pytest.mark.parametrize("declared", [2**30 - 600, MAX_RECORD_BYTES + 1, 2**32 - 1])
def test_a_huge_declared_length_fails_fast_without_allocating(tmp_path, declared):
    """A 1 GiB sparse file whose second record declares a huge payload: rejected from the prefix
    alone (it used to allocate and read the whole declared length)."""
    path = tmp_path / "sparse.wsr"
    with open(path, "wb") as f:
        f.write(MAGIC + encode_record(vector_header()) + RECORD_PREFIX.pack(declared, 0))
        f.truncate(2**30)
    offset = len(MAGIC) + len(encode_record(vector_header()))
    start = time.perf_counter()

    def load():
        with pytest.raises(DataError, match=f"record declares {declared} bytes, above") as info:
            read_shard(path)
        assert (info.value.path, info.value.offset) == (str(path), offset)

    peak, rss_growth = _peak_growth(load)
    assert time.perf_counter() - start < 1.0
    assert peak < 1_000_000 and rss_growth < 100 * 2**20


def test_the_writer_refuses_a_record_above_the_limit(tmp_path, monkeypatch):
    header = vector_header()
    small, big = steps("a", 0, 2), steps("a", 1, 40)
    monkeypatch.setattr(fmt, "MAX_RECORD_BYTES", len(codec.packb(small)) + 100)
    writer = ShardWriter(tmp_path / "limit.wsr", header)
    with pytest.raises(RecordError, match="steps record of agent 'a' episode 1 \\(40 steps\\) "
                                          "encodes to \\d+ bytes, above the format's limit"):
        writer.write(big)
    writer.write(small)  # the refusal left the writer usable
    writer.close()
    assert [len(r["reward"]) for r in read_shard(tmp_path / "limit.wsr")[1]] == [2]
    path = _raw_shard(tmp_path / "forged.wsr", header, [big])
    with pytest.raises(DataError, match="above the format's limit") as info:
        read_shard(path)
    assert info.value.offset == _offsets(header, [big])[0][1]


def test_long_records_split_into_pieces_that_stitch_back(tmp_path, monkeypatch):
    from worldssm.data import RolloutDataset

    image = make_header("Img-v0", box_space([64, 64, 3], 0, 255, "uint8"), {"type": "discrete", "n": 4},
                        ["a"], {})
    assert max_record_steps(image) == (MAX_RECORD_BYTES - 2**21) // (64 * 64 * 3 + 8 + 7)
    record = steps("a", 0, 10, terminal=True)
    pieces = split_steps(record, 4)
    assert [len(p["reward"]) for p in pieces] == [4, 4, 2] and split_steps(record, 10) == [record]
    assert [p["is_first"][0] for p in pieces] == [True, False, False] and pieces[-1]["is_terminal"][-1]
    monkeypatch.setattr(fmt, "MAX_RECORD_BYTES", 2**21 + 4 * (4 * 3 + 4 + 4 + 3))
    header = vector_header()
    assert max_record_steps(header) == 4
    path = _write(tmp_path / "pieces.wsr", header, split_steps(record, max_record_steps(header)))
    (episode,) = RolloutDataset.load(path).episodes
    for name in fmt.STEP_FIELDS:
        np.testing.assert_array_equal(episode[name], record[name])


def _discrete_header():
    return make_header("D-v0", box_space([2]), {"type": "discrete", "n": 2}, ["a"], {})


def _discrete_steps(actions, obs=None):
    record = steps("a", 0, len(actions), obs_dim=2)
    record["action"] = np.asarray(actions, np.int64)
    if obs is not None:
        record["obs"] = np.asarray(obs, np.float32)
    return record


def _with(record, name, row, value):
    record[name][row] = value
    return record


@pytest.mark.parametrize(
    "header, bad, words",
    [
        (_discrete_header, lambda: _discrete_steps([0, 5, 1]), "field action: row 1 holds 5, outside \\[0, 2\\)"),
        (_discrete_header, lambda: _discrete_steps([0, 1, -1]), "field action: row 2 holds -1"),
        (vector_header, lambda: _with(steps("a", 0, 4), "obs", (2, 1), np.nan), "field obs: row 2 contains NaN"),
        (vector_header, lambda: _with(steps("a", 0, 4), "reward", 3, np.inf), "field reward: row 3 contains NaN"),
        (vector_header, lambda: _with(steps("a", 0, 4), "action", (1, 0), -np.inf), "field action: row 1 contains"),
        (lambda: make_header("F-v0", box_space([2], dtype="float64"), box_space([1]), ["a"], {}),
         lambda: _with(dict(steps("a", 0, 3, obs_dim=2), obs=np.zeros((3, 2))), "obs", (1, 0), 1e39),
         "field obs: row 1 contains NaN or infinity \\(in float32\\)"),
        (lambda: make_header("O-v0", {"type": "discrete", "n": 3}, box_space([1]), ["a"], {}),
         lambda: dict(steps("a", 0, 3), obs=np.array([0, 2, 3])), "field obs: row 2 holds 3, outside \\[0, 3\\)"),
    ],
)
def test_values_the_spaces_forbid_are_refused_on_write_and_read(tmp_path, header, bad, words):
    header, bad = header(), bad()
    writer = ShardWriter(tmp_path / "w.wsr", header)
    with pytest.raises(RecordError, match=words):
        writer.write(bad)
    writer.abort()
    path = _raw_shard(tmp_path / "bad.wsr", header, [bad])
    with pytest.raises(DataError, match=words) as info:
        read_shard(path)
    assert (info.value.path, info.value.offset) == (str(path), _offsets(header, [bad])[0][1])


def test_allowed_values_pass(tmp_path):
    """The is_last step's zero action, the largest discrete action, and float observations
    beyond the Box bounds (which many Gymnasium envs report) are all valid."""
    discrete = _discrete_steps([1, 0, 0], obs=[[0, 0], [50, -50], [2, 2]])
    box = steps("a", 0, 3)
    box["action"][-1] = 0
    box["obs"][1] = 1e30
    _write(tmp_path / "d.wsr", _discrete_header(), [discrete])
    _write(tmp_path / "b.wsr", vector_header(), [box])
    assert read_shard(tmp_path / "d.wsr")[1][0]["obs"][1].tolist() == [50, -50]
    assert read_shard(tmp_path / "b.wsr")[1][0]["obs"][1, 0] == np.float32(1e30)


@pytest.mark.parametrize("at", ["write", "flush"])
@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "the disk is full"),
                                         (errno.EDQUOT, "the disk quota is exceeded")])
def test_a_full_disk_is_one_clear_error_and_leaves_no_file(tmp_path, at, code, words):
    writer = ShardWriter(tmp_path / "full.wsr", vector_header())
    writer._file = FullDisk(writer._file, at, code)
    with pytest.raises(WorldssmError, match=f"cannot write the shard .*full.wsr: {words}") as info:
        with writer:
            writer.write(steps("a", 0, 3))
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == code
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="closed"):
        writer.write(steps("a", 0, 3))


def test_abort_never_raises(tmp_path, monkeypatch):
    writer = ShardWriter(tmp_path / "x.wsr", vector_header())
    writer._file = FullDisk(writer._file, "flush")
    writer._file.full = True
    writer.abort()  # close fails again: swallowed, the temp file is still deleted
    assert list(tmp_path.iterdir()) == []
    writer.abort()
    writer = ShardWriter(tmp_path / "y.wsr", vector_header())
    tmp = writer._tmp

    def unlink(self, missing_ok=False):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.warns(UserWarning, match=f"could not delete the temporary shard file {tmp}"):
        writer.abort()
    monkeypatch.undo()
    assert tmp.exists()


def test_unwritable_directory_and_non_regular_files(tmp_path):
    with pytest.raises(WorldssmError, match="cannot write the shard .*missing/x.wsr"):
        ShardWriter(tmp_path / "missing" / "x.wsr", vector_header())
    fifo = tmp_path / "fifo.wsr"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file") as info:
        read_shard(fifo)  # opening a FIFO must not wait for a writer
    assert info.value.offset == 0
    with pytest.raises(DataError, match="not a regular file"):
        read_shard(tmp_path)
    with pytest.raises(WorldssmError, match="cannot open the shard"):
        read_shard(tmp_path / "nope.wsr")
