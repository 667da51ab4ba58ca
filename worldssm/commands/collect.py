"""`worldssm collect`: record rollouts of an env into rollout shards.

Every env name (swarm_v0, `pettingzoo/<family>/<env>`, any Gymnasium id) is collected through the
batched multi-agent API, agents joining and leaving; a Gymnasium id runs N copies as N agents.
"""

from __future__ import annotations

import argparse

from worldssm.agents.registry import AGENTS

HELP = "Collect rollouts of swarm_v0, a PettingZoo env or a Gymnasium id into .wsr shards."


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the collect options to `parser`."""
    parser.add_argument(
        "--env",
        required=True,
        help="swarm_v0, pettingzoo/<family>/<env>, or a Gymnasium id, e.g. Pendulum-v1",
    )
    parser.add_argument(
        "--agents",
        type=_positive_int,
        default=None,
        help="agents at reset (env copies for Gymnasium ids); default: the env's own (1 copy)",
    )
    parser.add_argument(
        "--steps",
        type=_positive_int,
        default=10_000,
        help="ticks PER AGENT (each agent acts once per tick); total steps ~ agents x steps",
    )
    parser.add_argument("--out", required=True, help="output directory for the *.wsr shards")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="base seed (Gymnasium ids: agent i uses seed + i; batched envs: env and policy)",
    )
    parser.add_argument(
        "--agent",
        choices=AGENTS,
        default=None,
        help="how the agents act (worldssm.agents); default greedy for swarm_v0, else random",
    )
    parser.add_argument(
        "--shard-steps",
        type=_positive_int,
        default=50_000,
        help="recorded steps per shard file before rolling over to the next",
    )


def run(args: argparse.Namespace) -> int:
    """Collect, showing a progress bar, then print where the data went."""
    from tqdm import tqdm

    from worldssm.data.collect import collect

    with tqdm(total=args.steps, unit="tick", desc=f"collect {args.env}") as bar:
        summary = collect(
            args.env,
            n_agents=args.agents,
            steps=args.steps,
            out_dir=args.out,
            seed=args.seed,
            agent=args.agent,
            shard_steps=args.shard_steps,
            progress=bar.update,
        )
    print(
        f"wrote {summary['steps']} steps ({summary['episodes']} episodes, "
        f"{summary['complete_episodes']} complete) from {summary['agents']} agents "
        f"in {len(summary['shards'])} shards to {summary['out_dir']}"
    )
    return 0
