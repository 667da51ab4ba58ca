"""worldssm train: train a world model on collected rollouts."""

from __future__ import annotations

HELP = "train a world model on rollout data (checkpoints, metrics, exact --resume)"


def configure(parser) -> None:
    from worldssm.commands.flags import add_config_flags
    from worldssm.train.config import TrainConfig

    parser.add_argument("--data", required=True, help="directory (or file) of rollout shards from `worldssm collect`")
    parser.add_argument("--out", required=True, help="run directory for config, metrics and checkpoints")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the run's latest checkpoint, on the data it was trained on and with "
                             "its saved settings (only --steps applies; other settings given are ignored, with "
                             "a warning)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the run already in --out (checkpoints, metrics, config) and train anew")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(parser, TrainConfig)


def run(args) -> int:
    from worldssm.commands.flags import config_from_args
    from worldssm.train import TrainConfig, Trainer

    cfg = config_from_args(TrainConfig, args)
    trainer = Trainer(args.data, args.out, cfg, resume=args.resume, overwrite=args.overwrite)
    if args.resume:
        _warn_ignored(cfg, trainer.cfg, getattr(args, "_argv", []))
    last = trainer.run(progress=not args.no_progress)
    if last:
        print(f"trained to step {trainer.updates}: loss {last['loss']:.4f}, val loss {last['val_loss']:.4f}")
    else:
        print(f"already at step {trainer.updates}: nothing to train")
    print(f"checkpoint: {trainer.last_checkpoint}")
    return 0


def _warn_ignored(given, saved, argv) -> None:
    """A resumed run trains on with its saved settings: name the settings typed on the command
    line (`argv`) that differ from the run's and so are not taken."""
    import dataclasses
    import warnings

    from worldssm.errors import WorldssmWarning

    typed = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    ignored = [f"--{f.name.replace('_', '-')} {getattr(given, f.name)} (the run's: {getattr(saved, f.name)})"
               for f in dataclasses.fields(given) if f.name != "steps"
               and {f"--{f.name.replace('_', '-')}", f"--no-{f.name.replace('_', '-')}"} & typed
               and getattr(given, f.name) != getattr(saved, f.name)]
    if ignored:
        warnings.warn("--resume trains on with the run's saved settings; ignored: " + ", ".join(ignored),
                      WorldssmWarning, stacklevel=2)
