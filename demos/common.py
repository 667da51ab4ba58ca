"""What the demos share: a world model for an env, trained on the spot unless one is given."""

from __future__ import annotations

import argparse
from pathlib import Path

import worldssm as ws


def model_flags(parser: argparse.ArgumentParser, run: str, data_steps: int, train_steps: int,
                played_by: str = "random") -> None:
    group = parser.add_argument_group("the world model (trained into --run unless it holds one)")
    group.add_argument("--run", type=Path, default=Path(run), help=f"run directory (default {run})")
    group.add_argument("--preset", default="SMALL", help="model size if training: DEBUG, SMALL or BASE")
    group.add_argument("--data-steps", type=int, default=data_steps,
                       help=f"ticks of {played_by} play to train on (default {data_steps})")
    group.add_argument("--train-steps", type=int, default=train_steps,
                       help=f"optimiser updates (default {train_steps})")


def ensure_model(env: str, args: argparse.Namespace, agents: int | None = 8, agent: str = "random") -> Path:
    """`args.run` if it holds a trained model, else collect `args.data_steps` ticks of `agent` play
    in `env` and train `args.preset` for `args.train_steps` updates into it."""
    if (args.run / "checkpoints" / "latest").exists():
        print(f"using the model in {args.run}")
        return args.run
    data = args.run.with_name(args.run.name + "-data")
    if not data.exists():
        print(f"collecting {args.data_steps} ticks of {agent} play in {env} into {data}")
        ws.collect(env, data, agents=agents, steps=args.data_steps, agent=agent)
    print(f"training a {args.preset} world model for {args.train_steps} updates into {args.run}")
    metrics = ws.train_model(data, args.run, preset=args.preset, steps=args.train_steps, progress=True)
    print(f"trained: validation loss {metrics.get('val_loss', float('nan')):.3f}")
    return args.run
