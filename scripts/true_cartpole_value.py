"""The value of `worldssm.agents.value.value_iteration` checked where the answer is known: iterated
in CartPole-v1's true equations (the test suite's engine look-alike, whose feature h is the state)
instead of a learned model, then the "fast" CEM planner with and without it, 10 real episodes.

    python scripts/true_cartpole_value.py [--iterations 15000] [--seed 0]

Prints the value at a few states and both planners' returns as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=15000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from tests.agents.test_value import DreamableCartPole
    from worldssm.agents.planners import PLANNER_PRESETS, CEMPlanner
    from worldssm.agents.rollout import run_episodes
    from worldssm.agents.value import DreamValueConfig, value_iteration

    rng = np.random.default_rng(args.seed)
    starts = [{"obs": rng.uniform(-0.05, 0.05, (1, 4)).astype(np.float32), "action": np.zeros(0, np.int64)}
              for _ in range(256)]  # CartPole-v1's start states
    cfg = DreamValueConfig(iterations=args.iterations, context=1, seed=args.seed, support=None)  # the true equations hold everywhere
    t0 = time.perf_counter()
    value, stats = value_iteration(DreamableCartPole(cfg.dreams * 3, 4), 4, starts, cfg)
    fit_s = time.perf_counter() - t0
    probes = {"centred, still": [0, 0, 0, 0], "x = 1": [1, 0, 0, 0], "x = 2": [2, 0, 0, 0],
              "x = 2 running out at 1 m/s": [2, 1, 0, 0], "pole at 0.15 rad": [0, 0, 0.15, 0]}
    at = value.predict(np.array(list(probes.values()), np.float32))
    pcfg = PLANNER_PRESETS["fast"]
    out = {"what": "fast CEM on CartPole-v1's true equations, 10 episodes, with and without a value iterated "
                   "in the same equations", "value_config": cfg.__dict__, "fit": stats, "fit_seconds": fit_s,
           "value_at": dict(zip(probes, np.round(at, 2).tolist()))}
    for name, v in (("without value", None), ("with value", value)):
        planner = CEMPlanner(DreamableCartPole(10 * (pcfg.samples + 1), 4), pcfg, seed=args.seed, value=v)
        res = run_episodes(planner, "CartPole-v1", episodes=10, seed=args.seed)
        out[name] = {"mean_return": res.mean_return, "returns": [int(r) for r in res.returns]}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
