"""Plan in Pendulum-v1 with MPPI: every step, imagine 64 candidate futures with the world model
and take the first action of the best ones.

    python demos/plan_pendulum.py                      # train a model (about 8 min on 2 cores), then plan
    python demos/plan_pendulum.py --run runs/pendulum  # plan with a model you trained

Uses only the public API (`import worldssm as ws`).
"""

from __future__ import annotations

import argparse

import worldssm as ws
from common import ensure_model, model_flags


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    model_flags(parser, "runs/demo-pendulum", data_steps=2500, train_steps=3000)
    parser.add_argument("--episodes", type=int, default=4, help="episodes played side by side (default 4)")
    parser.add_argument("--planner", default="fast", choices=sorted(ws.PLANNER_PRESETS),
                        help="search budget (default fast: 64 samples, horizon 24, 3 iterations)")
    parser.add_argument("--episode-steps", type=int, default=200,
                        help="steps per episode (default 200, Pendulum-v1's own limit)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.episode_steps < 1:
        parser.error(f"--episode-steps must be >= 1, got {args.episode_steps}")

    run = ensure_model("Pendulum-v1", args)
    model = ws.load(run)
    cfg = ws.PLANNER_PRESETS[args.planner]
    engine = ws.Engine(model, capacity=args.episodes * (cfg.samples + 1))  # each agent + its candidates
    planner = ws.make_planner(engine, cfg, seed=args.seed)  # MPPI: Pendulum's actions are a Box
    print(f"{type(planner).__name__}: {cfg.imagined_steps} imagined steps per decision")
    result = ws.run_episodes(planner, "Pendulum-v1", episodes=args.episodes, seed=args.seed,
                             env_kwargs={"max_episode_steps": args.episode_steps})
    summary = result.summary()
    print(f"returns {[round(r) for r in summary['returns']]}: mean {summary['mean_return']:.0f} "
          f"(random play: about -1,200; the best: about -150)")
    print(f"decision latency p50 {summary['decision_ms_p50']:.0f} ms, p99 {summary['decision_ms_p99']:.0f} ms, "
          f"{planner.imagined_steps_per_second():,.0f} imagined steps/s")
    return summary


if __name__ == "__main__":
    main()
