"""worldssm eval: open-loop prediction error of a checkpoint against naive predictors."""

from __future__ import annotations

HELP = "evaluate open-loop predictions (horizons 1..64) against repeat-last and mean predictors"


def configure(parser) -> None:
    from worldssm.commands.flags import add_config_flags
    from worldssm.train.evaluate import EvalConfig

    parser.add_argument("--checkpoint", required=True, help="run directory or checkpoint directory")
    parser.add_argument("--data", required=True, help="rollout shards to evaluate on")
    parser.add_argument("--out", required=True, help="directory for eval.json and openloop.png")
    add_config_flags(parser, EvalConfig)


def run(args) -> int:
    from worldssm.commands.flags import config_from_args
    from worldssm.train.evaluate import EvalConfig, evaluate, summary_table

    cfg = config_from_args(EvalConfig, args)
    result = evaluate(args.checkpoint, args.data, args.out, cfg)
    print(summary_table(result))
    print(f"wrote {args.out}/eval.json and {args.out}/openloop.png ({result['windows']} windows)")
    return 0
