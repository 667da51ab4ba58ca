"""Where LunarLanderContinuous-v3's one-step error comes from (the fidelity issue's numbers).

    python scripts/lunarlander_limits.py --data runs/fidelity/LunarLanderContinuous-v3/data

1. On the held-out episodes of a fidelity run's data (`TrainConfig`'s split), at the steps the
   open-loop protocol scores (after 16 observed steps): the share of repeat-last's squared error
   on steps where either leg touches the ground in o_t or o_{t+1}, and how many steps those are.
2. The env's own randomness (the main and side engines' dispersion): from the same state and
   action, replaying an episode to step t with its own draws and then stepping with a fresh
   random stream; the variance of o_{t+1} across 4 such branches, in the same units, against
   repeat-last's error on those steps.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

from worldssm.data import RolloutDataset
from worldssm.train import TrainConfig
from worldssm.train.evaluate import error_units


def contact_share(data: str) -> None:
    cfg = TrainConfig()
    _, held = RolloutDataset.load(data).split(cfg.val_fraction, cfg.seed)
    eps = held.episodes
    var = error_units(np.concatenate([e["obs"] for e in eps]).astype(np.float64))
    err, touch = [], []
    for e in eps:
        o = e["obs"].astype(np.float64)
        for t in range(15, len(o) - 1):
            err.append((o[t + 1] - o[t]) ** 2 / var)
            touch.append(o[t, 6:8].any() or o[t + 1, 6:8].any())
    err, touch = np.array(err), np.array(touch)
    print(f"held-out steps {len(err)}: legs touching on {touch.mean():.1%} of them, which carry "
          f"{err[touch].sum() / err.sum():.1%} of repeat-last's error (per dimension there: "
          f"{np.round(err[touch].mean(0), 2).tolist()}; elsewhere {np.round(err[~touch].mean(0), 4).tolist()})")


def noise_floor(episodes: int, branches: int = 4) -> None:
    env = gym.make("LunarLander-v3", continuous=True).unwrapped
    rng = np.random.default_rng(123)
    spread, rep, seen = [], [], []
    for ep in range(episodes):
        seed = 1000 + ep
        o, _ = env.reset(seed=seed)
        obs, acts = [o], []
        while len(acts) < 1000:
            acts.append(rng.uniform(-1, 1, 2).astype(np.float32))
            o, _, term, trunc, _ = env.step(acts[-1])
            obs.append(o)
            if term or trunc:
                break
        obs = np.array(obs, np.float64)
        seen.append(obs)
        for t in range(16, len(acts)):
            nxt = []
            for b in range(branches):
                env.reset(seed=seed)
                for a in acts[:t]:
                    env.step(a)
                env.np_random = np.random.default_rng(10_000 * b + t + 7)  # a fresh engine-noise stream
                nxt.append(env.step(acts[t])[0])
            spread.append(np.var(np.array(nxt, np.float64), 0, ddof=1))
            rep.append((obs[t + 1] - obs[t]) ** 2)
    var = error_units(np.concatenate(seen))
    floor, last = (np.array(spread) / var).mean(), (np.array(rep) / var).mean()
    print(f"{len(spread)} steps of {episodes} random episodes: the env's own noise {floor:.6f} against "
          f"repeat-last {last:.4f} ({floor / last:.2%} of it)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a fidelity run's LunarLanderContinuous-v3 rollouts")
    p.add_argument("--episodes", type=int, default=30, help="random episodes replayed for the noise floor")
    a = p.parse_args()
    contact_share(a.data)
    noise_floor(a.episodes)


if __name__ == "__main__":
    main()
