"""worldssm train: train a world model on collected rollouts."""

from __future__ import annotations

HELP = "train a world model on rollout data (checkpoints, metrics, exact --resume)"


def configure(parser) -> None:
    from worldssm.train.config import TrainConfig

    d = TrainConfig()
    parser.add_argument("--data", required=True, help="directory (or file) of rollout shards from `worldssm collect`")
    parser.add_argument("--out", required=True, help="run directory for config, metrics and checkpoints")
    parser.add_argument("--preset", default=d.preset, help="model preset: DEBUG, SMALL (CPU) or BASE (GPU)")
    parser.add_argument("--steps", type=int, default=d.steps, help="optimiser steps in total")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="sequences per batch")
    parser.add_argument("--seq-len", type=int, default=d.seq_len, help="steps per sequence")
    parser.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of init, sampling and latent draws")
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction, help="episodes held out")
    parser.add_argument("--log-every", type=int, default=d.log_every, help="steps between metric lines")
    parser.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    parser.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"], help="where to train")
    parser.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: default)")
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args):
    from worldssm.train.config import TrainConfig

    return TrainConfig(
        preset=args.preset, steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
        seed=args.seed, val_fraction=args.val_fraction, log_every=args.log_every,
        checkpoint_every=args.checkpoint_every, device=args.device, threads=args.threads,
    )


def run(args) -> int:
    from worldssm.train import Trainer

    trainer = Trainer(args.data, args.out, config_from_args(args), resume=args.resume)
    last = trainer.run(progress=not args.no_progress)
    print(f"trained to step {trainer.step}: loss {last.get('loss', float('nan')):.4f}, "
          f"val loss {last.get('val_loss', float('nan')):.4f}")
    print(f"checkpoint: {trainer.last_checkpoint}")
    return 0
