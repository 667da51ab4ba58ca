"""The shipped agents: batched over rows, valid actions for their space, replayable from
(seed, tick), and made by name in one place."""

import numpy as np
import pytest

from worldssm.agents import AGENTS, Agent, AgentInfo, GreedyAgent, PatternAgent, RandomAgent, make_agent

BOX = {"type": "box", "shape": [2], "dtype": "float32", "low": np.array([-1.0, 0.0], np.float32),
       "high": np.array([1.0, np.inf], np.float32)}
DISC = {"type": "discrete", "n": 3}


def info(n, tick=5, offset=0):
    return AgentInfo(ids=np.arange(offset, offset + n, dtype=np.int64), tick=tick, first=np.zeros(n, bool))


@pytest.mark.parametrize("cls", [RandomAgent, PatternAgent])
@pytest.mark.parametrize("space", [BOX, DISC])
def test_actions_fit_the_space_for_every_row(cls, space):
    agent = cls(space, seed=1)
    assert isinstance(agent, Agent)
    a = agent.act(np.zeros((7, 4), np.float32), info(7))
    if space["type"] == "discrete":
        assert a.shape == (7,) and a.dtype == np.int64 and ((a >= 0) & (a < 3)).all()
    else:
        assert a.shape == (7, 2) and a.dtype == np.float32 and np.isfinite(a).all()
        assert ((a[:, 0] >= -1) & (a[:, 0] <= 1)).all(), "the bounded dimension stays inside its bounds"
        if cls is PatternAgent:  # an unbounded side is swept as if it were at +-1
            assert ((a[:, 1] >= 0) & (a[:, 1] <= 1)).all()


def test_random_agent_replays_from_seed_and_tick_only():
    a, b = RandomAgent(BOX, seed=3), RandomAgent(BOX, seed=3)
    first = a.act(None, info(5, tick=9))
    a.act(None, info(5, tick=10))  # history does not matter
    np.testing.assert_array_equal(b.act(None, info(5, tick=9)), first)
    assert not np.array_equal(RandomAgent(BOX, seed=4).act(None, info(5, tick=9)), first)
    assert not np.array_equal(a.act(None, info(5, tick=11)), first)


def test_pattern_agent_differs_per_agent_and_moves_with_time():
    agent = PatternAgent(DISC)
    now = agent.act(None, info(3, tick=0))
    assert len(set(now.tolist())) == 3
    assert not np.array_equal(agent.act(None, info(3, tick=4)), now)


def test_greedy_agent_needs_its_swarm_and_acts_for_its_rows():
    from worldssm.envs import make

    env = make("swarm_v0", api="batched", n_agents=6)
    obs, reset_info = env.reset(seed=0)
    agent = GreedyAgent(env, seed=0, noise=0.0)
    rows = AgentInfo(ids=reset_info["agent_ids"], tick=0, first=np.ones(6, bool))
    a = agent.act(obs, rows)
    assert a.shape == (6,) and ((a >= 0) & (a < 5)).all()
    sub = np.array([4, 1])  # a subset, as when agents of several kinds share the env
    np.testing.assert_array_equal(agent.act(obs[sub], rows.rows(sub)), a[sub])
    bare = AgentInfo(ids=reset_info["agent_ids"][:2], tick=0, first=np.ones(2, bool))
    with pytest.raises(ValueError, match="the 6 agents of its env"):
        agent.act(obs[:2], bare)  # two rows, and nothing says which
    with pytest.raises(ValueError, match="swarm_v0"):
        GreedyAgent(make("CartPole-v1", api="batched"))


def test_greedy_agent_eats_more_than_random():
    from worldssm.envs import make
    from worldssm.spaces import space_to_dict

    eaten = {}
    for name in ("greedy", "random"):
        env = make("swarm_v0", api="batched", n_agents=64, max_steps=150)
        obs, i = env.reset(seed=1)
        agent = make_agent(name, space_to_dict(env.single_action_space), env=env, seed=2)
        total = 0.0
        for tick in range(150):
            if env.num_agents == 0:
                break
            obs, rew, term, trunc, i = env.step(agent.act(obs, AgentInfo(env.agent_ids, tick, np.zeros(env.num_agents, bool))))
            total += float((rew > 0.5).sum())
            obs = np.concatenate([obs[~(term | trunc)], i["spawned_obs"]])
        eaten[name] = total
    assert eaten["greedy"] > 2 * eaten["random"]


def test_make_agent_by_name():
    assert set(AGENTS) == {"random", "pattern", "greedy"}
    assert isinstance(make_agent("random", DISC), RandomAgent)
    assert isinstance(make_agent("pattern", DISC), PatternAgent)
    with pytest.raises(ValueError, match="dream agents have none"):
        make_agent("greedy", DISC)
    with pytest.raises(ValueError, match="unknown agent 'clever'"):
        make_agent("clever", DISC)


def test_info_rows_select_every_field():
    i = AgentInfo(ids=np.arange(4), tick=2, first=np.array([1, 0, 1, 0], bool),
                  pred_reward=np.arange(4, dtype=np.float32), pred_cont=None)
    sub = i.rows(np.array([2, 3]))
    assert sub.ids.tolist() == [2, 3] and sub.first.tolist() == [True, False] and sub.tick == 2
    assert sub.pred_reward.tolist() == [2.0, 3.0] and sub.pred_cont is None and sub.num_agents == 2
    assert i.env_rows is None and sub.env_rows.tolist() == [2, 3]
    assert sub.rows(np.array([1])).env_rows.tolist() == [3], "rows of rows keep the env's numbering"
