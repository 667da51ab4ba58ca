"""Collecting swarm_v0 through the batched API: joins, leaves and resets recorded as episodes."""

import argparse
from collections import defaultdict

import numpy as np
import pytest
import torch

import worldssm.envs as envs
from worldssm.commands import collect as collect_cmd
from worldssm.data import RolloutDataset, collect, read_shard
from worldssm.data.collect import EpisodeRecorder
from worldssm.envs.swarm import SwarmEnv
from worldssm.errors import WorldssmError

SPY = "test_swarm_spy_v0"
# Agents start weak and spawn often, and ids run out: agents leave by starving, newcomers join,
# and episodes end both by truncation (max_steps) and by everybody dying.
HARSH = dict(energy_init=0.15, energy_per_tick=0.01, spawn_prob=0.3, max_steps=70,
             max_agent_ids=80)


class SpySwarm(SwarmEnv):
    """A SwarmEnv that logs everything it returns (copies), to check the recorded data."""

    log: list = []

    def reset(self, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        SpySwarm.log.append(("reset", info["agent_ids"].copy(), obs.copy()))
        return obs, info

    def step(self, actions):
        out = super().step(actions)
        obs, reward, term, trunc, info = out
        SpySwarm.log.append(("step", np.array(actions).copy(), obs.copy(), reward.copy(),
                             term.copy(), trunc.copy(), info["agent_ids"].copy(),
                             info["spawned_ids"].copy(), info["spawned_obs"].copy()))
        return out


if SPY not in envs.names():
    envs.register(SPY, lambda **kw: SpySwarm(**kw))


def expected_episodes(log):
    """Per agent id, its episodes in order, rebuilt from the raw env outputs."""
    per_id = defaultdict(list)
    live = {}
    for entry in log:
        if entry[0] == "reset":
            live = {}
            for i, o in zip(entry[1].tolist(), entry[2], strict=True):
                live[i] = {"obs": [o], "action": [], "reward": [0.0], "end": None}
                per_id[i].append(live[i])
            continue
        _, actions, obs, reward, term, trunc, ids, spawned, spawned_obs = entry
        for r, i in enumerate(ids.tolist()):
            ep = live[i]
            ep["action"].append(actions[r])
            ep["obs"].append(obs[r])
            ep["reward"].append(reward[r])
            if term[r] or trunc[r]:
                ep["end"] = "terminal" if term[r] else "truncated"
                del live[i]
        for i, o in zip(spawned.tolist(), spawned_obs, strict=True):
            live[i] = {"obs": [o], "action": [], "reward": [0.0], "end": None}
            per_id[i].append(live[i])
    return per_id


@pytest.fixture(scope="module")
def harsh_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("swarm")
    SpySwarm.log = []
    summary = collect(SPY, n_agents=32, steps=200, out_dir=out, seed=3, shard_steps=1500,
                      env_kwargs=HARSH)
    return out, summary, list(SpySwarm.log)


def test_joins_leaves_and_resets_happen(harsh_run):
    _, summary, log = harsh_run
    steps = [e for e in log if e[0] == "step"]
    assert len(steps) == 200
    assert sum(e[0] == "reset" for e in log) == summary["resets"] + 1 >= 3
    assert sum(e[4].sum() for e in steps) > 0  # starved agents left
    assert sum(len(e[7]) for e in steps) > 0  # newcomers joined
    assert len(summary["shards"]) > 1


def test_episodes_match_the_raw_env_outputs(harsh_run):
    out, summary, log = harsh_run
    data = RolloutDataset.load(out)
    assert data.spec.env_id == SPY
    expected = expected_episodes(log)
    got = {(ep["agent"], ep["episode"]): ep for ep in data.episodes}
    assert len(got) == len(data.episodes) == sum(len(v) for v in expected.values())
    cut = 0
    for agent_id, episodes in expected.items():
        for k, exp in enumerate(episodes):
            ep = got[(f"agent_{agent_id}", k)]
            ended = exp["end"] is not None
            # A cut episode lacks the observation after the last tick (it never acted from it).
            length = len(exp["obs"]) if ended else len(exp["action"])
            cut += not ended
            assert len(ep["reward"]) == length
            assert ep["is_first"][0] and not ep["is_first"][1:].any()
            assert bool(ep["is_last"][-1]) == ended and not ep["is_last"][:-1].any()
            assert bool(ep["is_terminal"][-1]) == (exp["end"] == "terminal")
            assert not ep["is_terminal"][:-1].any()
            np.testing.assert_array_equal(ep["obs"], np.stack(exp["obs"][:length]))
            np.testing.assert_array_equal(ep["reward"], np.float32(exp["reward"][:length]))
            actions = exp["action"] + [0] * ended
            np.testing.assert_array_equal(ep["action"], np.asarray(actions[:length], np.int64))
    # Only the agents live at the end are cut, except newcomers of the last tick (never acted).
    last = log[-1]
    final_live = last[6][~(last[4] | last[5])]
    assert cut == len(final_live)
    assert summary["complete_episodes"] == len(got) - cut


def test_every_spawned_agent_starts_one_episode(harsh_run):
    out, summary, log = harsh_run
    data = RolloutDataset.load(out)
    firsts = sum(int(ep["is_first"].sum()) for ep in data.episodes)
    at_reset = sum(len(e[1]) for e in log if e[0] == "reset")
    joined = sum(len(e[7]) for e in log[:-1] if e[0] == "step")
    assert firsts == at_reset + joined == summary["episodes"]
    assert summary["steps"] == data.num_steps


def test_headers_list_the_agents_of_their_shard(harsh_run):
    out, summary, _ = harsh_run
    seen = set()
    for path in summary["shards"]:
        header, records = read_shard(path)
        agents = {r["agent"] for r in records}
        assert set(header["agent_ids"]) == agents
        assert header["meta"]["agent"] == "greedy"
        seen |= agents
    # ids are reused after resets, yet (agent, episode) keys never collide
    assert len(seen) < summary["episodes"]


def test_world_model_trains_on_swarm_data(harsh_run, tmp_path):
    from worldssm.train import Trainer, TrainConfig

    out, _, _ = harsh_run
    cfg = TrainConfig(preset="DEBUG", steps=3, batch_size=2, seq_len=16, device="cpu")
    trainer = Trainer(out, tmp_path / "run", cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    losses = [trainer.update()["loss"] for _ in range(3)]
    assert all(np.isfinite(losses))
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_collect_is_deterministic_under_a_seed(tmp_path):
    runs = []
    for name in ("a", "b"):
        collect("swarm_v0", n_agents=8, steps=40, out_dir=tmp_path / name, seed=5,
                env_kwargs=HARSH)
        runs.append(RolloutDataset.load(tmp_path / name).episodes)
    assert len(runs[0]) == len(runs[1])
    for x, y in zip(*runs, strict=True):
        assert (x["agent"], x["episode"]) == (y["agent"], y["episode"])
        for field in ("obs", "action", "reward", "is_first", "is_last", "is_terminal"):
            np.testing.assert_array_equal(x[field], y[field])


def test_random_agent_and_continuous_actions(tmp_path):
    summary = collect("swarm_v0", n_agents=4, steps=10, out_dir=tmp_path, agent="random",
                      env_kwargs={"action_mode": "continuous"})
    data = RolloutDataset.load(tmp_path)
    assert data.spec.action_space["type"] == "box"
    assert summary["steps"] == data.num_steps == 40
    assert all(ep["action"].dtype == np.float32 for ep in data.episodes)


def test_rejections(tmp_path):
    with pytest.raises(WorldssmError, match="greedy"):
        collect("CartPole-v1", n_agents=1, steps=1, out_dir=tmp_path / "a", agent="greedy")
    with pytest.raises(WorldssmError, match="unknown agent"):
        collect("swarm_v0", n_agents=2, steps=1, out_dir=tmp_path / "b", agent="clever")
    with pytest.raises(WorldssmError, match="cannot make"):
        collect("swarm_v0", n_agents=2, steps=1, out_dir=tmp_path / "c",
                env_kwargs={"no_such_field": 1})


def test_recorder_rejects_broken_episode_order():
    space = {"type": "discrete", "n": 2}
    obs_space = {"type": "box", "shape": [1], "dtype": "float32",
                 "low": np.zeros(1, np.float32), "high": np.ones(1, np.float32)}
    rec = EpisodeRecorder(obs_space, space, lambda i: f"agent_{i}")
    one = np.ones(1, bool)
    args = (np.zeros((1, 1), np.float32), np.zeros(1, np.int64), np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="agent_4.*outside an episode"):
        rec.add([4], *args, ~one, ~one, ~one)
    rec.add([4], *args, one, ~one, ~one)
    with pytest.raises(ValueError, match="agent_4.*is_first while"):
        rec.add([4], *args, one, ~one, ~one)
    with pytest.raises(ValueError, match="is_terminal without is_last"):
        rec.add([4], *args, ~one, ~one, one)
    with pytest.raises(ValueError, match="distinct"):
        rec.add([4, 4], *(np.concatenate([a, a]) for a in args), *([~one.repeat(2)] * 3))
    rec.add([4], *args, ~one, one, one)
    rec.add([4], *args, one, ~one, ~one)
    records = rec.flush()
    assert [(r["agent"], r["episode"], len(r["reward"])) for r in records] == [
        ("agent_4", 0, 2), ("agent_4", 1, 1)]
    assert rec.flush() == []


def test_cli_collects_swarm(tmp_path, capsys):
    args = argparse.Namespace(env="swarm_v0", agents=6, steps=25, out=str(tmp_path), seed=0,
                              agent=None, shard_steps=60)
    assert collect_cmd.run(args) == 0
    assert "from 6 agents" in capsys.readouterr().out
    data = RolloutDataset.load(tmp_path)
    assert data.num_steps == 6 * 25
    header, _ = read_shard(sorted(tmp_path.glob("*.wsr"))[0])
    assert header["env_id"] == "swarm_v0" and header["meta"]["agent"] == "greedy"
    assert all(a.startswith("agent_") for a in header["agent_ids"])


def test_pettingzoo_env_through_the_batched_path(tmp_path):
    pytest.importorskip("pettingzoo")
    summary = collect("pettingzoo/classic/rps_v2", n_agents=None, steps=30, out_dir=tmp_path,
                      env_kwargs={"max_cycles": 10})
    data = RolloutDataset.load(tmp_path)
    # Episodes of 10 moves are 11 steps; ids are reused after each reset with new episode numbers.
    assert summary["resets"] == 2
    keys = sorted((ep["agent"], ep["episode"]) for ep in data.episodes)
    assert keys == [(a, e) for a in ("player_0", "player_1") for e in range(3)]
    assert all(len(ep["reward"]) == 11 and ep["is_last"][-1] for ep in data.episodes)
    assert data.spec.observation_space == {"type": "discrete", "n": 4}
    with pytest.raises(WorldssmError, match="fixes its own agents"):
        collect("pettingzoo/classic/rps_v2", n_agents=5, steps=3, out_dir=tmp_path / "five")
