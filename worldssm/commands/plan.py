"""worldssm plan: a planner acting in the real env with a trained model, scored over episodes."""

from __future__ import annotations

from worldssm.choices import TORCH_DEVICES

import dataclasses

HELP = "act in the real env with a planner (MPPI or categorical CEM) that imagines with a trained model"


def configure(parser) -> None:
    from worldssm.agents.planners import PLANNER_PRESETS, PlannerConfig
    from worldssm.commands.flags import add_config_flags

    parser.add_argument("--checkpoint", required=True, nargs="+",
                        help="run directory or checkpoint directory; two or more plan with the ensemble of their "
                             "models (mean reward, the lowest continue probability: agents/ensemble.py)")
    parser.add_argument("--env", default=None, help="Gymnasium id to act in (default: the env the model was trained on)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes, played side by side (copy i seeded seed + i)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the env copies and of the planner")
    parser.add_argument("--planner", choices=sorted(PLANNER_PRESETS), default="fast",
                        help="preset of the search settings; the flags below override single fields")
    parser.add_argument("--device", choices=TORCH_DEVICES, default="cpu", help="where the model imagines")
    parser.add_argument("--out", default=None, help="write the result as JSON to this file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--value", action="store_true",
                        help="plan with the value saved in the run (worldssm improve --value): what follows the horizon")
    add_config_flags(parser, PlannerConfig, prefix="plan",
                     defaults={f.name: None for f in dataclasses.fields(PlannerConfig)})


def planner_config(args):
    """The preset named by --planner with the --plan-* flags the user gave laid over it."""
    from worldssm.agents.planners import PLANNER_PRESETS, PlannerConfig
    from worldssm.commands.flags import config_from_args

    base = PLANNER_PRESETS[args.planner]
    given = {f.name: getattr(base, f.name) for f in dataclasses.fields(PlannerConfig)
             if getattr(args, f"plan_{f.name}") is None}
    return config_from_args(PlannerConfig, args, prefix="plan", **given)


def run(args) -> int:
    import json
    import time

    from worldssm.agents.rollout import plan_in_env
    from worldssm.atomic import atomic_write_text
    from worldssm.bench.env import git_sha
    from worldssm.errors import WorldssmError

    if args.episodes < 1:  # before the model is loaded
        raise WorldssmError(f"--episodes must be >= 1, got {args.episodes}")
    if args.out:
        from worldssm.atomic import check_out_file

        check_out_file(args.out, "--out")

    cfg = planner_config(args)
    result = plan_in_env(args.checkpoint, args.env, cfg, episodes=args.episodes, seed=args.seed,
                         device=args.device, progress=not args.no_progress, value=args.value)
    print(f"{result['env']}: mean return {result['mean_return']:.1f} +- {result['std_return']:.1f} over "
          f"{len(result['returns'])} episodes (returns {', '.join(f'{r:.0f}' for r in result['returns'])})")
    print(f"decision for {result['episodes']} agents: p50 {result['decision_ms_p50']:.1f} ms, "
          f"p99 {result['decision_ms_p99']:.1f} ms; {result['imagined_steps_per_s']:,.0f} imagined agent-steps/s "
          f"against {result['raw_steps_per_s']:,.0f} for the bare step at batch {result['raw_step_batch']:,} "
          f"({_overhead(result['planning_overhead'])})")
    if args.out:
        import torch

        card = torch.cuda.get_device_name() if result["device"] == "cuda" else "cpu"
        result.update(git_sha=git_sha(), time=time.strftime("%Y-%m-%dT%H:%M:%S"), device_name=card)
        atomic_write_text(args.out, json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return 0


def _overhead(value) -> str:
    """The planning overhead for the summary line; below zero the bare step's own timing noise
    is larger than the overhead, and the line says so rather than print a negative cost."""
    if value is None:
        return "planning overhead n/a"
    if value < 0:
        return f"planning overhead below the timing noise: the bare step timed {100 * -value:.0f}% slower"
    return f"planning overhead {100 * value:.0f}%"
