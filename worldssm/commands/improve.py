"""worldssm improve: collect -> train -> plan in the real env, round after round (worldssm.improve)."""

from __future__ import annotations

HELP = "improve a model and its planner in rounds: collect, train, let the planner play (recorded), train again"


def configure(parser) -> None:
    from worldssm.commands.flags import add_config_flags
    from worldssm.improve import ImproveConfig

    parser.add_argument("--out", required=True, help="directory of the loop (data, one run per round, scores)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the loop in --out with its saved settings (a larger --rounds adds rounds)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_flags(parser, ImproveConfig, defaults={"env": None, "rounds": None})


def run(args) -> int:
    from worldssm.commands.flags import config_from_args
    from worldssm.errors import WorldssmError
    from worldssm.improve import ImproveConfig, improve

    if args.resume:
        state = improve(args.out, None, resume=True, progress=not args.no_progress, rounds=args.rounds)
    else:
        if args.env is None:
            raise WorldssmError("--env is required (unless --resume)")
        cfg = config_from_args(ImproveConfig, args, rounds=ImproveConfig.rounds if args.rounds is None else args.rounds)
        state = improve(args.out, cfg, progress=not args.no_progress)
    for s in state["scores"]:
        print(f"round {s['round']}: mean return {s['mean_return']:.1f} +- {s['std_return']:.1f} "
              f"({len(s['returns'])} episodes, {s['mean_decision_ms']:.0f} ms per decision)")
    final = state.get("final")
    if final is not None:
        print(f"final test (round {final['round']}'s model, fresh seeds {final['seeds'][0]}-{final['seeds'][1]}): "
              f"mean return {final['mean_return']:.1f} +- {final['std_return']:.1f}")
    print(f"state: {args.out}/improve.json")
    return 0
