"""worldssm train: train a world model on collected rollouts."""

from __future__ import annotations

HELP = "train a world model on rollout data (checkpoints, metrics, exact --resume)"


def configure(parser) -> None:
    from worldssm.commands.flags import add_config_flags
    from worldssm.train.config import TrainConfig

    parser.add_argument("--data", required=True, help="directory (or file) of rollout shards from `worldssm collect`")
    parser.add_argument("--out", required=True, help="run directory for config, metrics and checkpoints")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the run's latest checkpoint (on the data it was trained on)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the run already in --out (checkpoints, metrics, config) and train anew")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(parser, TrainConfig)


def run(args) -> int:
    from worldssm.commands.flags import config_from_args
    from worldssm.train import TrainConfig, Trainer

    cfg = config_from_args(TrainConfig, args)
    trainer = Trainer(args.data, args.out, cfg, resume=args.resume, overwrite=args.overwrite)
    last = trainer.run(progress=not args.no_progress)
    if last:
        print(f"trained to step {trainer.updates}: loss {last['loss']:.4f}, val loss {last['val_loss']:.4f}")
    else:
        print(f"already at step {trainer.updates}: nothing to train")
    print(f"checkpoint: {trainer.last_checkpoint}")
    return 0
