"""The lowest one-step error and the highest end-of-episode F1 that any predictor of
LunarLanderContinuous-v3 can reach from what it observes (the fidelity issue's targets).

    python scripts/lunarlander_floor.py --episodes 100 --terrains 200 --out floor.json

What a LunarLander observation leaves out is the terrain: eleven random heights drawn at reset
(all but the helipad's). Until the lander first touches the ground, its flight does not depend
on them, so the terrains that fit an episode's observations up to step t are exactly those that
the same actions, replayed from the same seed with that terrain, would not have touched by t.

For each random-policy episode (uniform actions, seeded as the fidelity suite collects), the
same actions are replayed `--terrains` times with terrains drawn from the env's own prior (the
same engine-noise stream: only the heights change). At every step t >= 15 (the open-loop
protocol's first scored step follows 16 observed ones), the replays whose observations equal the
episode's up to t are draws from the posterior over terrains given everything a model has seen.
Their spread of o_{t+1} is what no predictor can remove:

    E[(f(history) - o_{t+1})^2] >= E[Var(o_{t+1} | history)]

for every predictor f. `floor` averages that variance in the protocol's units (each dimension's
variance over the episodes, `evaluate.error_units`) over the scored steps, beside repeat-last's
error on the same steps. It is a lower bound: once a leg has touched, few replays stay
consistent, and a step with fewer than two counts as predictable (0).

The end: at each scored step the share of consistent replays that end at t+1 is the posterior
probability of the end. `best_end_f1` is the F1 of the best threshold on it, counting expected
hits and misses (a step without the posterior counts as predicted exactly, so this is an upper
bound on any predictor's F1 there).
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
from gymnasium.envs.box2d import lunar_lander as ll

from worldssm.train.evaluate import error_units

CHUNKS = 11  # LunarLander's terrain: CHUNKS + 1 heights drawn at reset


class _Heights:
    """The env's random stream, except that the terrain's draw is replaced by given heights
    (the draw is still taken, so every later draw is the same as without the replacement)."""

    def __init__(self, rng: np.random.Generator, heights: np.ndarray):
        self.rng, self.heights = rng, heights

    def uniform(self, low=0.0, high=1.0, size=None):
        out = self.rng.uniform(low, high, size)
        if self.heights is not None and size == (CHUNKS + 1,):
            out, self.heights = self.heights.copy(), None
        return out

    def __getattr__(self, name):
        return getattr(self.rng, name)


class TerrainLander(ll.LunarLander):
    """LunarLander whose next reset takes `terrain` (CHUNKS + 1 heights) instead of drawing it."""

    terrain: np.ndarray | None = None

    @property
    def np_random(self):
        rng = gym.Env.np_random.fget(self)
        if self.terrain is None:
            return rng
        wrapped, self.terrain = _Heights(rng, self.terrain), None
        self._np_random = wrapped  # used for the rest of this reset and episode
        return wrapped

    @np_random.setter
    def np_random(self, value):
        gym.Env.np_random.fset(self, value)


def rollout(env: TerrainLander, seed: int, actions: np.ndarray, terrain=None):
    """Observations [T+1, 8] and whether each step ended the episode [T+1] (index 0: False),
    with `terrain` or the seed's own; stops at the end or after the actions."""
    env.terrain = terrain
    obs, _ = env.reset(seed=seed)
    out, ended = [obs], [False]
    for a in actions:
        obs, _, term, trunc, _ = env.step(a)
        out.append(obs)
        ended.append(bool(term))
        if term or trunc:
            break
    return np.array(out, np.float64), np.array(ended)


def episode(env, seed: int, terrains: int, rng: np.random.Generator, max_steps: int = 1000) -> dict:
    actions = rng.uniform(-1, 1, (max_steps, 2)).astype(np.float32)
    obs, ended = rollout(env, seed, actions)
    n = len(obs)
    heights = rng.uniform(0, ll.VIEWPORT_H / ll.SCALE / 2, (terrains, CHUNKS + 1))
    alts = [rollout(env, seed, actions[: n - 1], h) for h in heights]
    # agree[k, t]: replay k's observations equal the episode's through step t
    agree = np.zeros((terrains, n), bool)
    for k, (o, _) in enumerate(alts):
        m = min(len(o), n)
        same = np.all(o[:m] == obs[:m], axis=1)
        agree[k, :m] = np.cumprod(same).astype(bool)
    var, p_end, count = np.zeros((n - 1, obs.shape[1])), np.zeros(n - 1), np.zeros(n - 1, int)
    for t in range(n - 1):
        ks = [k for k in range(terrains) if agree[k, t] and len(alts[k][0]) > t + 1]
        nxt = np.array([obs[t + 1]] + [alts[k][0][t + 1] for k in ks])  # the episode's own terrain is one draw
        end = np.array([ended[t + 1]] + [alts[k][1][t + 1] for k in ks], float)
        count[t] = len(nxt)
        if len(nxt) >= 2:
            var[t] = nxt.var(0, ddof=1)
            p_end[t] = end.mean()
        else:
            p_end[t] = end[0]
    return {"obs": obs, "ended": ended, "var": var, "p_end": p_end, "count": count}


def best_f1(p: np.ndarray) -> tuple[float, float]:
    """(F1, threshold) of predicting an end where the posterior probability p >= threshold,
    with expected hits sum(p) over the predicted steps and expected misses over the others."""
    best = (0.0, 1.0)
    for thr in np.unique(p[p > 0]):
        pred = p >= thr
        tp, fp, fn = p[pred].sum(), (1 - p[pred]).sum(), p[~pred].sum()
        best = max(best, (2 * tp / (2 * tp + fp + fn), float(thr)))
    return best


def measure(episodes: int, terrains: int, seed: int = 0, first_scored: int = 15) -> dict:
    env = TerrainLander(continuous=True)
    rng = np.random.default_rng(seed)
    eps = [episode(env, 1000 + i, terrains, rng) for i in range(episodes)]
    units = error_units(np.concatenate([e["obs"] for e in eps]))
    floor, last, touch, counts, p_end, is_end = [], [], [], [], [], []  # per scored step
    for e in eps:
        o = e["obs"]
        for t in range(first_scored, len(o) - 1):
            floor.append(e["var"][t] / units)
            last.append((o[t + 1] - o[t]) ** 2 / units)
            touch.append(bool(o[t, 6:8].any() or o[t + 1, 6:8].any()))
            counts.append(e["count"][t])
            p_end.append(e["p_end"][t])
            is_end.append(e["ended"][t + 1])
    floor, last = np.array(floor).mean(1), np.array(last).mean(1)
    touch, counts, p_end = np.array(touch), np.array(counts), np.array(p_end)
    f1, thr = best_f1(p_end)
    is_end = np.array(is_end)
    blind = is_end & (counts >= 2)  # ends at steps where the terrain was still unknown
    return {"episodes": episodes, "terrains_per_episode": terrains, "seed": seed, "scored_steps": int(floor.size),
            "floor": float(floor.mean()), "repeat_last": float(last.mean()),
            "floor_over_repeat_last": float(floor.mean() / last.mean()),
            "touch_steps": int(touch.sum()),
            "steps_with_posterior": int((counts >= 2).sum()), "median_consistent_terrains": float(np.median(counts)),
            "ends": int(is_end.sum()), "ends_with_posterior": int(blind.sum()),
            "mean_end_probability_there": float(p_end[blind].mean()) if blind.any() else None,
            "best_end_f1": float(f1), "best_end_threshold": thr,
            "note": "floor: mean over scored steps of Var(o_{t+1} | observations to t) in the protocol's units, "
                    "a lower bound for any predictor's horizon-1 error; best_end_f1: an upper bound for the "
                    "continue head's F1 (scripts/lunarlander_floor.py)"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=100, help="random-policy episodes (seeds 1000, 1001, ...)")
    p.add_argument("--terrains", type=int, default=200, help="terrains drawn from the prior per episode")
    p.add_argument("--seed", type=int, default=0, help="seed of the actions and the terrains")
    p.add_argument("--out", help="write the result as JSON here")
    a = p.parse_args()
    if a.episodes < 1 or a.terrains < 1:
        p.error("--episodes and --terrains must be >= 1")
    from worldssm.bench.env import record_script_result

    res = measure(a.episodes, a.terrains, a.seed)
    record_script_result(res, "lunarlander_floor.py", a, a.out)


if __name__ == "__main__":
    main()
