"""The actor layout: agents split evenly, pools sized with headroom, room for dream agents."""

import numpy as np
import pytest

from worldssm.sim.config import SimConfig
from worldssm.sim.topology import Topology


@pytest.mark.parametrize("agents, env_actors, envs_per_actor, per_env", [
    (16, 2, 1, (8, 8)),
    (7, 2, 1, (4, 3)),
    (7, 2, 2, (2, 2)),  # 4 and 3 agents over 2 envs each: rounded up per env
    (1, 3, 1, (1,)),  # never an empty EnvActor
])
def test_real_agents_spread_evenly(agents, env_actors, envs_per_actor, per_env):
    topo = Topology.build(SimConfig(agents=agents, env_actors=env_actors, envs_per_actor=envs_per_actor))
    assert topo.agents_per_env == per_env and topo.n_env == len(per_env)
    assert topo.pool >= max(per_env) * envs_per_actor + 2


def test_env_actors_feed_engines_round_robin_and_capacity_covers_everything():
    cfg = SimConfig(mode="mixed", agents=20, dream_fraction=0.5, env_actors=3, engine_actors=2)
    topo = Topology.build(cfg)
    assert topo.envs_of == ((0, 2), (1,)) and [topo.engine_of(e) for e in range(3)] == [0, 1, 0]
    assert topo.dream_room >= cfg.n_dream // 2
    assert topo.capacity(0) == 2 * topo.pool + topo.dream_room and topo.capacity(1) == topo.pool + topo.dream_room


def test_dream_mode_has_no_env_actors():
    topo = Topology.build(SimConfig(mode="dream", agents=10, engine_actors=2))
    assert topo.n_env == 0 and topo.envs_of == ((), ()) and topo.dream_room >= 5


def test_assign_kinds_gives_exact_counts_well_mixed_and_keeps_shares_for_joiners():
    from worldssm.sim.topology import assign_kinds

    rows = assign_kinds([2, 3, 3], 8)
    assert np.bincount(rows).tolist() == [2, 3, 3]
    assert np.bincount(rows[:4], minlength=3).min() >= 1, "every kind in the first half too"
    for shares in ([1], [5, 1], [1, 1, 1, 7], [10, 0, 3]):
        got = assign_kinds(shares, sum(shares))
        assert np.bincount(got, minlength=len(shares)).tolist() == list(shares)
    # the three of kind 1 left: the joiners are all of kind 1
    have = np.array([0, 0, 2, 2, 2])
    assert assign_kinds([2, 3, 3], 3, have).tolist() == [1, 1, 1]
