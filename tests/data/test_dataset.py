import numpy as np
import pytest

from worldssm.data import RolloutDataset, ShardWriter
from worldssm.errors import DataError, WorldssmError

from ._helpers import steps, vector_header


def _shard(path, records, header=None):
    with ShardWriter(path, header or vector_header()) as writer:
        for record in records:
            writer.write(record)
    return path


def test_load_stitches_episodes_across_records_and_shards(tmp_path):
    _shard(tmp_path / "s0.wsr", [steps("a", 0, 3, last=False), steps("b", 0, 2)])
    _shard(
        tmp_path / "s1.wsr",
        [steps("a", 0, 4, first=False, terminal=True, start=3), steps("b", 1, 5, last=False)],
    )
    (tmp_path / ".s2.wsr.abc.tmp").write_bytes(b"half-written garbage")
    ds = RolloutDataset.load(tmp_path)
    assert ds.spec.env_id == "Test-v0" and ds.spec.action_space["shape"] == [1]
    assert [(e["agent"], e["episode"], len(e["reward"])) for e in ds.episodes] == [
        ("a", 0, 7),
        ("b", 0, 2),
        ("b", 1, 5),
    ]
    a0 = ds.episodes[0]
    np.testing.assert_array_equal(a0["obs"][:, 0], np.arange(7))
    assert a0["is_first"].tolist() == [True] + [False] * 6
    assert a0["is_last"].tolist() == [False] * 6 + [True]
    assert a0["is_terminal"][-1] and not ds.episodes[2]["is_last"].any()
    assert ds.num_steps == 14 and len(ds) == 3


def test_load_single_file_and_empty_dir(tmp_path):
    path = _shard(tmp_path / "only.wsr", [steps("a", 0, 3)])
    assert RolloutDataset.load(path).num_steps == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorldssmError, match="no \\*.wsr shards"):
        RolloutDataset.load(tmp_path / "empty")


def test_headers_must_agree(tmp_path):
    _shard(tmp_path / "s0.wsr", [steps("a", 0, 3)])
    _shard(tmp_path / "s1.wsr", [steps("a", 1, 3)], vector_header(env_id="Other-v0"))
    with pytest.raises(DataError, match="env_id 'Other-v0' differs") as info:
        RolloutDataset.load(tmp_path)
    assert info.value.path == str(tmp_path / "s1.wsr") and info.value.offset == 8
    header = vector_header()
    header["observation_space"]["high"] = header["observation_space"]["high"] * 2
    _shard(tmp_path / "s1.wsr", [steps("a", 1, 3)], header)
    with pytest.raises(DataError, match="observation_space.high differs"):
        RolloutDataset.load(tmp_path)


def test_steps_after_is_last_and_double_start_are_errors(tmp_path):
    _shard(tmp_path / "s0.wsr", [steps("a", 0, 3), steps("a", 0, 2, first=False)])
    with pytest.raises(DataError, match="after its is_last"):
        RolloutDataset.load(tmp_path)
    _shard(tmp_path / "s0.wsr", [steps("a", 0, 3, last=False), steps("a", 0, 2)])
    with pytest.raises(DataError, match="starts twice"):
        RolloutDataset.load(tmp_path)


def _dataset(n_episodes, tmp_path):
    records = [steps("a", i, 2 + i % 3, start=100 * i) for i in range(n_episodes)]
    return RolloutDataset.load(_shard(tmp_path / "d.wsr", records))


def _ids(ds):
    return [e["episode"] for e in ds.episodes]


def test_split_is_by_episode_and_deterministic(tmp_path):
    ds = _dataset(20, tmp_path)
    train, val = ds.split(0.25, seed=3)
    assert len(val) == 5 and len(train) == 15
    assert sorted(_ids(train) + _ids(val)) == list(range(20))
    assert train.num_steps + val.num_steps == ds.num_steps
    again = ds.split(0.25, seed=3)
    assert (_ids(again[0]), _ids(again[1])) == (_ids(train), _ids(val))
    others = {tuple(_ids(ds.split(0.25, seed=s)[1])) for s in range(4, 10)}
    assert len(others | {tuple(_ids(val))}) > 1
    assert train.spec == ds.spec


def test_split_small_datasets(tmp_path):
    two = _dataset(2, tmp_path)
    train, val = two.split(0.01, seed=0)
    assert len(train) == 1 and len(val) == 1
    train, val = two.split(0.9, seed=0)
    assert len(train) == 1 and len(val) == 1
    one = RolloutDataset(two.spec, two.episodes[:1])
    train, val = one.split(0.5, seed=0)
    assert len(train) == 1 and len(val) == 0
    assert len(two.split(0.0, seed=0)[1]) == 0
    with pytest.raises(ValueError):
        two.split(1.0, seed=0)


def test_obs_stats(tmp_path):
    ds = _dataset(5, tmp_path)
    allobs = np.concatenate([e["obs"] for e in ds.episodes]).astype(np.float64)
    mean, std = ds.obs_stats()
    assert mean.dtype == np.float64 and mean.shape == (3,)
    np.testing.assert_allclose(mean, allobs.mean(0))
    np.testing.assert_allclose(std[0], allobs[:, 0].std())
    # Dimensions 1 and 2 are constant zero: std is floored.
    np.testing.assert_array_equal(std[1:], [1e-6, 1e-6])


def test_subdirectories_are_collections_whose_agent_names_stay_apart(tmp_path):
    _shard(tmp_path / "s0.wsr", [steps("a", 0, 3)])
    (tmp_path / "round-01").mkdir()
    _shard(tmp_path / "round-01" / "s0.wsr", [steps("a", 0, 4)])  # the same (agent, episode) names
    (tmp_path / "round-01" / "deeper").mkdir()
    _shard(tmp_path / "round-01" / "deeper" / "s0.wsr", [steps("b", 0, 9)])  # two levels down: not read
    (tmp_path / "empty").mkdir()
    ds = RolloutDataset.load(tmp_path)
    assert [(e["agent"], len(e["reward"])) for e in ds.episodes] == [("a", 3), ("round-01/a", 4)]
    only_sub = tmp_path / "only"
    (only_sub / "r0").mkdir(parents=True)
    _shard(only_sub / "r0" / "s0.wsr", [steps("a", 0, 2)])
    assert [e["agent"] for e in RolloutDataset.load(only_sub).episodes] == ["r0/a"]
    with pytest.raises(DataError, match="differs"):
        (tmp_path / "round-02").mkdir()
        other = vector_header()
        other["env_id"] = "Other-v0"
        _shard(tmp_path / "round-02" / "s0.wsr", [steps("a", 0, 2)], header=other)
        RolloutDataset.load(tmp_path)
