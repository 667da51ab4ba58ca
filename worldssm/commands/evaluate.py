"""worldssm eval: open-loop prediction error of a checkpoint against naive predictors."""

from __future__ import annotations

HELP = "evaluate open-loop predictions (horizons 1..64) against repeat-last and mean predictors"


def configure(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="run directory or checkpoint directory")
    parser.add_argument("--data", required=True, help="rollout shards to evaluate on")
    parser.add_argument("--out", required=True, help="directory for eval.json and openloop.png")
    parser.add_argument("--context", type=int, default=16, help="observed steps before imagining")
    parser.add_argument("--split", default="val", choices=["val", "all"],
                        help="val: the training run's held-out episodes of --data; all: every episode")
    parser.add_argument("--sample", action="store_true", help="sample imagined latents instead of the mode")
    parser.add_argument("--max-windows", type=int, default=512, help="cap on evaluation windows")
    parser.add_argument("--seed", type=int, default=0, help="seed for window choice and latent draws")
    parser.add_argument("--device", default="cpu", help="torch device")


def run(args) -> int:
    from worldssm.train.evaluate import evaluate, summary_table

    result = evaluate(args.checkpoint, args.data, args.out, context=args.context, split=args.split,
                      sample=args.sample, max_windows=args.max_windows, seed=args.seed, device=args.device)
    print(summary_table(result))
    print(f"wrote {args.out}/eval.json and {args.out}/openloop.png ({result['windows']} windows)")
    return 0
