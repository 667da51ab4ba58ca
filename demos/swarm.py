"""A swarm_v0 simulation mixing three kinds of agents in one arena: planners that imagine with
the world model (inside the EngineActor that holds their states), the scripted food seeker, and a
user-defined agent from an import path (`my_agents.py`). Prints each kind's mean episode return.

    python demos/swarm.py                      # train a swarm model (about 8 min on 2 cores), then simulate
    python demos/swarm.py --run runs/swarm --backend ray

Uses only the public API (`import worldssm as ws`).
"""

from __future__ import annotations

import argparse

import worldssm as ws
from common import ensure_model, model_flags


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    model_flags(parser, "runs/demo-swarm", data_steps=600, train_steps=3000, played_by="greedy")
    parser.add_argument("--planners", type=int, default=4, help="planning agents (default 4)")
    parser.add_argument("--seekers", type=int, default=14, help="scripted food seekers (default 14)")
    parser.add_argument("--sniffers", type=int, default=14, help="agents of my_agents.FoodSniffer (default 14)")
    parser.add_argument("--ticks", type=int, default=120, help="ticks to run; an episode is --episode-steps")
    parser.add_argument("--episode-steps", type=int, default=100, help="swarm_v0's max_steps (default 100)")
    parser.add_argument("--planner", default="fast", choices=sorted(ws.PLANNER_PRESETS))
    parser.add_argument("--backend", default="local", choices=["local", "ray"],
                        help="local: every actor in this process; ray: actors on a local Ray cluster")
    args = parser.parse_args(argv)

    run = ensure_model("swarm_v0", args, agents=None, agent="greedy").resolve()
    agents = {"planner": args.planners, "greedy": args.seekers, "my_agents:FoodSniffer": args.sniffers}
    cfg = ws.SimConfig(model=ws.ModelSource.of_checkpoint(run), env="swarm_v0",
                       env_kwargs={"max_steps": args.episode_steps},
                       agents={k: v for k, v in agents.items() if v}, planner=args.planner,
                       agent_kwargs={"my_agents:FoodSniffer": {"leg": 10}} if args.sniffers else {},
                       env_actors=1, backend=args.backend)
    with ws.Simulation(cfg) as sim:
        for _ in range(args.ticks):
            sim.tick()
        summary = sim.summary()
    print(f"{args.ticks} ticks, {summary['agents_seen']} agents, tick p50 {summary['latency_ms']['p50']:.1f} ms")
    for name, r in summary["returns_by_agent"].items():
        print(f"  {name:24s} {r['episodes']:3d} episodes, mean return {r['mean_return']:+.2f}")
    return summary


if __name__ == "__main__":
    main()
