import argparse
import threading

import gymnasium
import numpy as np
import pytest

from worldssm.commands import collect as collect_cmd
from worldssm.data import RolloutDataset, collect, read_shard
from worldssm.data import format as fmt
from worldssm.errors import WorldssmError
from worldssm.locks import LOCK_NAME, DirectoryBusy, DirLock

from ._helpers import IMAGE_MAX_STEPS, FullDisk, register_image_env


def _names(directory):
    """The files in a directory, less the lock file that collect leaves (harmless once unlocked)."""
    return sorted(p.name for p in directory.iterdir() if p.name != LOCK_NAME)


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory):
    out = tmp_path_factory.mktemp("pendulum")
    summary = collect("Pendulum-v1", n_agents=2, steps=450, out_dir=out, seed=5, shard_steps=300)
    return summary, RolloutDataset.load(out)


def test_pendulum_episodes_and_flags(pendulum):
    """Two copies, 450 ticks: each copy plays two full episodes of 200 actions and a cut third;
    a copy whose episode ends restarts as a new agent (ids 0, 1; then 2, 3; then 4, 5)."""
    summary, ds = pendulum
    by_agent = {e["agent"]: e for e in ds.episodes}
    assert sorted(by_agent) == [f"agent_{i}" for i in range(6)]
    assert all(e["episode"] == 0 for e in ds.episodes), "every id is one episode"
    for i in range(4):
        ep = by_agent[f"agent_{i}"]
        assert len(ep["reward"]) == 201
        assert np.flatnonzero(ep["is_first"]).tolist() == [0]
        assert np.flatnonzero(ep["is_last"]).tolist() == [200]
        assert not ep["is_terminal"].any(), "Pendulum only truncates (TimeLimit at 200)"
        assert ep["reward"][0] == 0 and (ep["reward"][1:] < 0).all()
        np.testing.assert_array_equal(ep["action"][-1], [0.0])
    for i in (4, 5):
        tail = by_agent[f"agent_{i}"]
        assert len(tail["reward"]) == 50 and tail["is_first"][0] and not tail["is_last"].any()
    assert ds.episodes[0]["obs"].dtype == np.float32 and ds.episodes[0]["action"].shape == (201, 1)
    assert summary["steps"] == ds.num_steps == 2 * (201 + 201 + 50)
    assert summary["episodes"] == 6 and summary["complete_episodes"] == 4


def test_pendulum_replays_in_a_fresh_env(pendulum):
    """Copy i starts with seed 5 + i and restarts from its own stream: agents i, i + 2 are its
    first two episodes, and replaying their actions in a fresh env gives the same data."""
    _, ds = pendulum
    by_agent = {e["agent"]: e for e in ds.episodes}
    for copy in (0, 1):
        env = gymnasium.make("Pendulum-v1")
        first_obs, _ = env.reset(seed=5 + copy)
        for k, agent in enumerate((f"agent_{copy}", f"agent_{copy + 2}")):
            ep = by_agent[agent]
            if k == 1:
                first_obs, _ = env.reset()
            np.testing.assert_array_equal(ep["obs"][0], first_obs)
            for t in range(200):
                obs, reward, terminated, truncated, _ = env.step(ep["action"][t])
                np.testing.assert_allclose(ep["reward"][t + 1], reward, rtol=1e-6)
                np.testing.assert_allclose(ep["obs"][t + 1], obs, rtol=1e-6)
                assert truncated == (t == 199) and not terminated


def test_pendulum_shards_roll_over_and_are_complete(pendulum):
    summary, _ = pendulum
    sizes = []
    for path in summary["shards"]:
        header, records = read_shard(path)
        assert header["meta"]["seed"] == 5 and header["meta"]["n_agents"] == 2
        assert header["meta"]["agent"] == "random" and "worldssm_version" in header["meta"]
        sizes.append(sum(len(r["reward"]) for r in records))
    assert len(sizes) >= 3
    assert all(300 <= s < 300 + 4 for s in sizes[:-1]) and sum(sizes) == summary["steps"]
    assert [p.rsplit("/", 1)[1] for p in summary["shards"]] == [
        f"shard-{i:05d}.wsr" for i in range(len(sizes))
    ]


def test_image_env_terminal_and_truncated_episodes(tmp_path):
    env_id = register_image_env()
    summary = collect(env_id, n_agents=3, steps=60, out_dir=tmp_path, seed=1)
    ds = RolloutDataset.load(tmp_path)
    assert ds.spec.observation_space["dtype"] == "uint8"
    assert ds.spec.observation_space["shape"] == [8, 8, 3]
    assert ds.spec.action_space == {"type": "discrete", "n": 3}
    kinds = set()
    for ep in ds.episodes:
        assert ep["obs"].dtype == np.uint8 and ep["action"].dtype == np.int64
        if not ep["is_last"][-1]:
            continue
        actions = len(ep["reward"]) - 1
        target = int(ep["obs"][0, 0, 0, 0])
        np.testing.assert_array_equal(ep["obs"][:, 0, 0, 1], np.arange(actions + 1))
        assert actions == min(target, IMAGE_MAX_STEPS)
        assert ep["is_terminal"][-1] == (target <= IMAGE_MAX_STEPS)
        # Reward on arrival equals the action taken at the previous step.
        np.testing.assert_array_equal(ep["reward"][1:], ep["action"][:-1])
        kinds.add(bool(ep["is_terminal"][-1]))
    assert kinds == {True, False}, "expected both terminated and truncated episodes"
    assert summary["ticks"] == 60 and summary["agents"] == 3


def test_interrupted_collect_keeps_only_complete_shards(tmp_path):
    env_id = register_image_env()
    ticks = []

    def progress(n):
        ticks.append(n)
        if len(ticks) == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collect(env_id, 2, 100, tmp_path, shard_steps=20, progress=progress)
    names = _names(tmp_path)
    assert names and all(n.startswith("shard-") and n.endswith(".wsr") for n in names)
    assert RolloutDataset.load(tmp_path).num_steps >= 40


class _WeirdSpaceEnv(gymnasium.Env):
    observation_space = gymnasium.spaces.MultiBinary(4)
    action_space = gymnasium.spaces.Discrete(2)


def test_rejections(tmp_path):
    if "WorldssmTestWeird-v0" not in gymnasium.registry:
        gymnasium.register(id="WorldssmTestWeird-v0", entry_point=_WeirdSpaceEnv)
    with pytest.raises(WorldssmError, match="only Box and Discrete"):
        collect("WorldssmTestWeird-v0", 1, 5, tmp_path / "weird")
    assert not (tmp_path / "weird").exists(), "a rejected collect creates nothing"
    with pytest.raises(WorldssmError, match="greedy agent reads a swarm_v0"):
        collect("Pendulum-v1", 1, 5, tmp_path / "p", agent="greedy")
    with pytest.raises(WorldssmError, match="cannot make environment"):
        collect("NoSuchEnv-v9", 1, 5, tmp_path / "n")
    collect("Pendulum-v1", 1, 5, tmp_path / "twice")
    with pytest.raises(WorldssmError, match="already holds"):
        collect("Pendulum-v1", 1, 5, tmp_path / "twice")


def test_cli_run_on_image_env(tmp_path, capsys):
    env_id = register_image_env()
    parser = argparse.ArgumentParser()
    collect_cmd.configure(parser)
    out = tmp_path / "cli"
    args = parser.parse_args(
        [
            "--env",
            env_id,
            "--agents",
            "2",
            "--steps",
            "30",
            "--out",
            str(out),
            "--shard-steps",
            "25",
        ]
    )
    assert collect_cmd.run(args) == 0
    ds = RolloutDataset.load(out)
    assert ds.spec.env_id == env_id and ds.episodes[0]["obs"].shape[1:] == (8, 8, 3)
    assert len(list(out.glob("*.wsr"))) >= 2
    printed = capsys.readouterr().out
    assert str(out) in printed and f"wrote {ds.num_steps} steps" in printed
    assert isinstance(collect_cmd.HELP, str) and "\n" not in collect_cmd.HELP
    bad = parser.parse_args(["--env", env_id, "--out", str(tmp_path / "bad"), "--agents", "0"])
    with pytest.raises(WorldssmError, match="--agents must be >= 1"):
        collect_cmd.run(bad)
    assert not (tmp_path / "bad").exists(), "a rejected config creates nothing"


TEMP = ".shard-00003.wsr.0123456789ab.tmp"


def test_collect_deletes_the_temp_files_a_killed_collection_left(tmp_path, capsys):
    """Only the writer's temp files for shards go: other hidden files are not collect's."""
    env_id = register_image_env()
    out = tmp_path / "out"
    out.mkdir()
    keep = [".notes.tmp", ".other.wsr.0123456789ab.tmp", ".shard-1.wsr.xyz.tmp"]
    for name in [TEMP, ".shard-00000.wsr.fedcba987654.tmp", *keep]:
        (out / name).write_bytes(b"half a shard")
    parser = argparse.ArgumentParser()
    collect_cmd.configure(parser)
    assert collect_cmd.run(parser.parse_args(["--env", env_id, "--steps", "5", "--out", str(out)])) == 0
    printed = capsys.readouterr().out
    assert "removed 2 temporary shard files left by an interrupted collection" in printed
    assert _names(out) == sorted(keep + ["shard-00000.wsr"])
    summary = collect(env_id, 1, 5, tmp_path / "clean")
    assert summary["removed_temp_files"] == 0
    assert "removed" not in capsys.readouterr().out


def test_a_second_collect_into_the_same_directory_names_the_first(tmp_path):
    env_id = register_image_env()
    started, release = threading.Event(), threading.Event()
    errors = []

    def progress(_):
        started.set()
        release.wait(10)

    def first():
        try:
            collect(env_id, 1, 3, tmp_path, progress=progress)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(30)
        (tmp_path / TEMP).write_bytes(b"the first collection's, in a real run")
        with pytest.raises(DirectoryBusy, match=f"{tmp_path} is in use: collecting by pid \\d+"):
            collect(env_id, 1, 3, tmp_path)
        assert (tmp_path / TEMP).exists(), "the refused collection deleted nothing"
    finally:
        release.set()
        thread.join(30)
    assert errors == []
    with pytest.raises(WorldssmError, match="already holds"):
        collect(env_id, 1, 3, tmp_path)


def test_a_full_disk_during_collect_is_one_error_and_leaves_no_temp_file(tmp_path, monkeypatch):
    env_id = register_image_env()
    real_open = open
    monkeypatch.setattr(fmt, "open", lambda *a, **k: FullDisk(real_open(*a, **k), "flush"), raising=False)
    with pytest.raises(WorldssmError, match="cannot write the shard .*shard-00000.wsr: the disk is full"):
        collect(env_id, 2, 10, tmp_path, shard_steps=5)
    assert _names(tmp_path) == []
    monkeypatch.undo()
    with DirLock(tmp_path, "checking"):
        pass  # the failed collection released its lock
    assert collect(env_id, 2, 10, tmp_path, shard_steps=5)["removed_temp_files"] == 0


class _NaNEnv(gymnasium.Env):
    """Observations [t, 0]; the fourth one is NaN (a broken env)."""

    observation_space = gymnasium.spaces.Box(-10, 10, (2,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self._t += 1
        obs = np.array([np.nan if self._t == 3 else self._t, 0], np.float32)
        return obs, 0.0, False, False, {}


def test_an_env_producing_values_its_space_forbids_stops_collect_clearly(tmp_path):
    if "WorldssmTestNaN-v0" not in gymnasium.registry:
        gymnasium.register(id="WorldssmTestNaN-v0", entry_point=_NaNEnv)
    with pytest.raises(WorldssmError, match="shard-00000.wsr: steps record of agent 'agent_0' episode 0 "
                                            "\\(6 steps\\): field obs: row 3 contains NaN"):
        collect("WorldssmTestNaN-v0", 1, 6, tmp_path)
    assert _names(tmp_path) == []
