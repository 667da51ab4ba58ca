import numpy as np
import pytest

from worldssm.envs import SwarmEnv, make
from worldssm.envs.swarm.core import STATE_FIELDS
from worldssm.envs.swarm.steer import food_seeking_actions, random_actions


class Steer:
    """The env's steering rules as a policy for these tests: food seeking with `noise`, or
    random moves when `noise` is None."""

    def __init__(self, env, seed, noise=None):
        self.env, self.rng, self.noise = env, np.random.default_rng(seed), noise

    def act(self):
        if self.noise is None:
            return random_actions(self.env, self.rng)
        return food_seeking_actions(self.env, self.rng, self.noise)


def rollout(env, policy, steps):
    out = []
    for _ in range(steps):
        if env.num_agents == 0:
            break
        step = env.step(policy.act())
        out.append(step)
    return out


def same_state(a, b):
    for f in STATE_FIELDS:
        np.testing.assert_array_equal(a[f], b[f])
    assert a["t"] == b["t"] and a["next_id"] == b["next_id"] and a["rng"] == b["rng"]


def test_batched_contract_and_join_leave_bookkeeping():
    env = SwarmEnv(n_agents=32, energy_init=0.12, spawn_prob=0.5, max_steps=80)
    obs, info = env.reset(seed=3)
    assert obs.shape == (32, env.cfg.obs_dim) and obs.dtype == np.float32
    np.testing.assert_array_equal(info["agent_ids"], np.arange(32))
    policy = Steer(env, seed=0)
    seen, left, joins, leaves = set(range(32)), set(), 0, 0
    while env.num_agents:
        before = env.agent_ids.copy()
        obs, rew, term, trunc, info = env.step(policy.act())
        np.testing.assert_array_equal(info["agent_ids"], before)
        assert obs.shape[0] == rew.shape[0] == term.shape[0] == trunc.shape[0] == before.shape[0]
        assert rew.dtype == np.float32 and term.dtype == bool and trunc.dtype == bool
        done = term | trunc
        np.testing.assert_array_equal(
            env.agent_ids, np.concatenate([before[~done], info["spawned_ids"]]))
        new = set(info["spawned_ids"].tolist())
        assert not new & seen, "an id was reused within the episode"
        assert info["spawned_obs"].shape == (len(new), env.cfg.obs_dim)
        assert not set(env.agent_ids.tolist()) & left
        seen |= new
        left |= set(before[done].tolist())
        joins += len(new)
        leaves += int(term.sum())
        assert (np.diff(env.agent_ids) > 0).all(), "rows stay sorted by id"
        assert env.agent_ids.max(initial=-1) < env.max_agent_ids
    assert joins > 0 and leaves > 0, "the scenario must exercise both joining and leaving"
    with pytest.raises(ValueError, match="episode is over"):
        env.step(np.zeros(0, np.int64))


def test_parallel_dicts_drop_dead_agents_in_the_same_step():
    env = make("swarm_v0", n_agents=16, energy_init=0.05, spawn_prob=1.0, max_steps=40)
    obs, _ = env.reset(seed=0)
    ended_any = False
    for _ in range(40):
        if not env.agents:
            break
        live = list(env.agents)
        obs, rew, term, trunc, info = env.step({a: 0 for a in live})
        ended = {a for a in live if term[a] or trunc[a]}
        ended_any |= bool(ended)
        assert not ended & set(env.agents)
        assert set(obs) == set(live) | set(env.agents)
        for a in env.agents:
            assert a in rew and a in term and not term[a]
    assert ended_any


def test_determinism_under_seed():
    runs = []
    for _ in range(2):
        env = SwarmEnv(n_agents=40, max_steps=60, energy_init=0.2, spawn_prob=0.3)
        obs0, _ = env.reset(seed=11)
        steps = rollout(env, Steer(env, seed=5, noise=0.3), 60)
        runs.append((obs0, steps))
    (o1, s1), (o2, s2) = runs
    np.testing.assert_array_equal(o1, o2)
    assert len(s1) == len(s2) > 10
    for a, b in zip(s1, s2):
        for x, y in zip(a[:4], b[:4]):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(a[4]["spawned_ids"], b[4]["spawned_ids"])
    env = SwarmEnv(n_agents=40)
    other, _ = env.reset(seed=12)
    assert not np.array_equal(other, o1)


def test_ten_thousand_agents_step():
    env = SwarmEnv(n_agents=10_000)
    obs, info = env.reset(seed=0)
    assert obs.shape == (10_000, env.cfg.obs_dim)
    policy = Steer(env, seed=0, noise=0.1)
    for _ in range(3):
        obs, rew, term, trunc, info = env.step(policy.act())
        assert obs.shape[0] == info["agent_ids"].shape[0]
        assert np.isfinite(obs).all() and (np.abs(obs) <= 1).all()


def test_observation_semantics():
    env = SwarmEnv(n_agents=2, n_obstacles=0, arena_size=40.0, k_agents=2, k_food=1)
    env.reset(seed=0)
    env.pos[:] = [[10.0, 10.0], [13.0, 14.0]]  # 5 apart: in range of each other
    env.food_pos[:] = [30.0, 30.0]
    env.knn[:] = -1
    obs, *_ = env.step(np.array([0, 0]))
    k = env.cfg.k_agents
    nbr = obs[0, 10:10 + 5 * k].reshape(k, 5)
    np.testing.assert_allclose(nbr[0, :2], [3 / 6, 4 / 6], rtol=1e-5)
    assert nbr[0, 4] == 1 and nbr[1, 4] == 0
    food = obs[0, 10 + 5 * k:].reshape(1, 3)
    assert food[0, 2] == 0, "food 28 units away is out of sensing range"
    assert obs[0, 3] == pytest.approx(1.0) and obs[0, 2] == pytest.approx(
        (env.cfg.energy_init - env.cfg.energy_per_tick) / env.cfg.energy_max, rel=1e-5)


def test_eating_and_collisions_reward():
    env = SwarmEnv(n_agents=3, n_obstacles=0, arena_size=40.0, food_per_agent=2.0)
    env.reset(seed=0)
    env.pos[:] = [[10.0, 10.0], [20.0, 20.0], [20.6, 20.0]]
    env.vel[:] = 0
    env.food_pos[:] = 35.0
    env.food_pos[0] = [10.0, 10.1]
    env.knn[:] = [[-1, -1, -1, -1, -1, -1, -1, -1], [2] + [-1] * 7, [1] + [-1] * 7]
    e0 = env.energy.copy()
    obs, rew, term, trunc, info = env.step(np.zeros(3, np.int64))
    assert rew[0] == pytest.approx(env.cfg.reward_food)
    assert env.food_timer[0] == env.cfg.food_respawn_delay
    assert info["energy"][0] > e0[0]
    assert rew[1] == pytest.approx(-env.cfg.collision_penalty)
    assert np.linalg.norm(env.pos[1] - env.pos[2]) >= 2 * env.cfg.agent_radius - 1e-4


def test_image_observations_all_agents():
    env = SwarmEnv(n_agents=20, obs_mode="image", image_size=32)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (20, 32, 32, 3) and obs.dtype == np.uint8
    # Each agent sees itself in the centre.
    np.testing.assert_array_equal(obs[:, 16, 16], np.tile([255, 210, 40], (20, 1)))
    obs, *_ = env.step(np.zeros(20, np.int64))
    assert obs.shape == (20, 32, 32, 3)


def test_food_seeking_eats_more_than_random():
    totals = {}
    for name, noise in (("greedy", 0.1), ("random", None)):
        env = SwarmEnv(n_agents=64, max_steps=150)
        env.reset(seed=1)
        policy = Steer(env, seed=2, noise=noise)
        eaten = 0.0
        for _, rew, *_ in rollout(env, policy, 150):
            eaten += float((rew > 0.5).sum())
        totals[name] = eaten
    assert totals["greedy"] > 2 * totals["random"]


def test_continuous_actions():
    env = SwarmEnv(n_agents=5, action_mode="continuous")
    env.reset(seed=0)
    p0 = env.pos.copy()
    env.step(np.tile(np.array([[1.0, 0.0]], np.float32), (5, 1)))
    assert (env.pos[:, 0] > p0[:, 0]).all() or env.num_agents < 5


def test_render_rgb_array_and_highlight():
    env = SwarmEnv(n_agents=10, render_mode="rgb_array", highlight_agent=3, render_size=128)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (128, 128, 3) and frame.dtype == np.uint8
    assert (frame == [255, 60, 60]).all(axis=2).any(), "highlight ring drawn"
    plain = SwarmEnv(n_agents=10, render_mode="rgb_array", render_size=128)
    plain.reset(seed=0)
    assert not (plain.render() == [255, 60, 60]).all(axis=2).any()


def test_render_human_with_dummy_driver():
    env = make("swarm_v0", api="batched", n_agents=4, render_mode="human", render_size=64)
    env.reset(seed=0)
    assert env.render() is None
    env.step(np.zeros(4, np.int64))
    env.close()
    env.close()


def test_step_with_no_active_food():
    env = SwarmEnv(n_agents=3)
    env.reset(seed=0)
    env.food_timer[:] = 5
    obs, *_ = env.step(np.zeros(3, np.int64))
    k = env.cfg.k_agents
    assert (obs[:, 10 + 5 * k:].reshape(3, -1, 3)[..., 2] == 0).all()


@pytest.mark.parametrize("seed", range(4))
def test_obstacle_cell_map_covers_every_agent_inside_an_obstacle(seed):
    # The push-out only tests agents in flagged cells; an agent inside an obstacle anywhere
    # (also just inside the rim, at cell borders, or clamped in from outside) must be flagged.
    from worldssm.envs.swarm.grid import grid_cells

    env = SwarmEnv(n_agents=256, n_obstacles=12, obstacle_radius=(0.5, 9.0))
    env.reset(seed=seed)
    c, rng = env.cfg, np.random.default_rng(seed)
    reach = env.radii + c.agent_radius  # [O]
    o = rng.integers(0, len(reach), 20000)
    angle = rng.uniform(0, 2 * np.pi, o.shape)
    r = reach[o] * rng.choice([0.0, 0.5, 0.999999, 1.0, 1.000001], o.shape)
    pos = (env.centres[o] + np.stack([np.cos(angle), np.sin(angle)], 1) * r[:, None])
    pos = np.concatenate([pos, rng.uniform(-5, c.side + 5, (20000, 2))]).astype(np.float32)
    d = pos[:, None, :] - env.centres[None]
    inside = ((d * d).sum(axis=2) < reach**2).any(axis=1)
    flagged = env._obstacle_cells[grid_cells(pos, c.sense_radius, c.side)]
    assert inside.any() and not flagged.all()
    assert not (inside & ~flagged).any()
