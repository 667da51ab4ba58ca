"""`make(name, api, n_agents)`: every kind of name takes n_agents or rejects it clearly."""

import pytest

import worldssm.envs as E


@pytest.mark.parametrize("api", ["batched", "parallel"])
def test_every_kind_of_name_takes_n_agents(api):
    swarm = E.make("swarm_v0", api=api, n_agents=5)
    gym = E.make("CartPole-v1", api=api, n_agents=3)
    pz = E.make("pettingzoo/classic/rps_v2", api=api, n_agents=2)  # its own number: accepted
    for env, n in ((swarm, 5), (gym, 3), (pz, 2)):
        env.reset(seed=0)
        assert (env.num_agents if api == "batched" else len(env.agents)) == n
        env.close()


def test_defaults_and_kinds():
    env = E.make("CartPole-v1", api="batched")
    env.reset(seed=0)
    assert env.num_agents == 1 and env.metadata["autoreset_mode"] == "NewAgent"
    assert [E.kind_of(n) for n in ("swarm_v0", "pettingzoo/classic/rps_v2", "CartPole-v1")] == \
        ["builtin", "pettingzoo", "gymnasium"]


@pytest.mark.parametrize("name, kwargs, match", [
    ("pettingzoo/classic/rps_v2", {"n_agents": 3}, "fixes its own agents \\(2 of them\\)"),
    ("swarm_v0", {"n_agents": 0}, "positive int"),
    ("CartPole-v1", {"n_agents": True}, "positive int"),
    ("swarm_v0", {"no_such_field": 1}, "'swarm_v0' does not take these arguments"),
    ("NoSuchEnv-v0", {}, "unknown env 'NoSuchEnv-v0'"),
])
def test_rejections_name_the_problem(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        E.make(name, api="batched", **kwargs)
