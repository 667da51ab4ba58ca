"""`worldssm collect`: record rollouts of an env into rollout shards.

Every env name (swarm_v0, `pettingzoo/<family>/<env>`, any Gymnasium id) is collected through the
batched multi-agent API, agents joining and leaving; a Gymnasium id runs N copies as N agents.
The flags are CollectConfig's fields (generated, `worldssm.commands.flags`).
"""

from __future__ import annotations

import argparse

HELP = "Collect rollouts of swarm_v0, a PettingZoo env or a Gymnasium id into .wsr shards."


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the collect options to `parser`."""
    from worldssm.commands.flags import add_config_flags
    from worldssm.data.collect import CollectConfig

    parser.add_argument("--out", required=True, help="output directory for the *.wsr shards")
    add_config_flags(parser, CollectConfig)


def run(args: argparse.Namespace) -> int:
    """Collect, showing a progress bar, then print where the data went."""
    from tqdm import tqdm

    from worldssm.commands.flags import config_from_args
    from worldssm.data.collect import CollectConfig, collect

    cfg = config_from_args(CollectConfig, args)
    bars = []

    def progress(n: int) -> None:  # the bar appears with the first tick, after the checks
        if not bars:
            bars.append(tqdm(total=cfg.steps, unit="tick", desc=f"collect {cfg.env}"))
        bars[0].update(n)

    try:
        summary = collect(cfg.env, n_agents=cfg.agents, steps=cfg.steps, out_dir=args.out, seed=cfg.seed,
                          agent=cfg.agent, shard_steps=cfg.shard_steps, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    print(
        f"wrote {summary['steps']} steps ({summary['episodes']} episodes, "
        f"{summary['complete_episodes']} complete) from {summary['agents']} agents "
        f"in {len(summary['shards'])} shards to {summary['out_dir']}"
    )
    if summary["removed_temp_files"]:
        print(f"removed {summary['removed_temp_files']} temporary shard files left by an interrupted collection")
    return 0
