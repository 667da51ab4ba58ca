"""worldssm simulate: run agents in real envs, in the model's dream, or both, over Ray actors.

Every SimConfig field is a flag (generated, `worldssm.commands.flags`); the model comes from
`--checkpoint` (a trained run) or `--preset` (an untrained model over `--env`'s spaces).
"""

from __future__ import annotations

HELP = "run a multi-agent simulation (real | dream | mixed) on Ray actors; live tick rate, JSON summary"


def configure(parser) -> None:
    from worldssm.commands.flags import add_config_flags
    from worldssm.sim import SimConfig

    parser.add_argument("--checkpoint", help="run directory (or checkpoint dir) of a trained model")
    parser.add_argument("--preset", help="no checkpoint: an untrained model of this preset (smoke runs)")
    parser.add_argument("--ticks", type=int, default=100, help="ticks to run")
    parser.add_argument("--out", required=True, help="directory for summary.json")
    parser.add_argument("--address", help="an existing Ray cluster (default: start a local one)")
    parser.add_argument("--env-kwargs", default="{}", help="extra env kwargs as a JSON object, e.g. '{\"max_steps\": 200}'")
    parser.add_argument("--agents", default="16",
                        help="agents at the start: a number (acting as --agent), or a JSON object of how many of "
                             "each kind, e.g. '{\"planner\": 8, \"random\": 24}' (names: worldssm.agents, planner, "
                             "or package.module:Name) (default: 16)")
    parser.add_argument("--agent-kwargs", default="{}",
                        help="JSON object {agent name: {keyword: value}} for import-path agents")
    parser.add_argument("--no-progress", action="store_true", help="no live progress line")
    add_config_flags(parser, SimConfig, exclude=("model", "env_kwargs", "agents", "agent_kwargs"), defaults={"env": None})


def _model_source(args):
    """(ModelSource, the env it was trained on or None)."""
    from worldssm.errors import WorldssmError
    from worldssm.model import ModelSource

    if args.checkpoint and args.preset:
        raise WorldssmError("give --checkpoint or --preset, not both")
    if args.checkpoint:
        from worldssm.checkpoint import load_checkpoint, resolve_checkpoint

        sidecar = load_checkpoint(args.checkpoint)[0]
        return ModelSource.of_checkpoint(resolve_checkpoint(args.checkpoint).resolve()), sidecar["data"].get("env_id")
    if not args.preset:
        raise WorldssmError("--checkpoint RUN is required (or --preset NAME for an untrained model)")
    if not args.env:
        raise WorldssmError("--preset needs --env to know the spaces")
    from worldssm.envs import make
    from worldssm.model import PRESETS
    from worldssm.spaces import space_to_dict

    if args.preset.upper() not in PRESETS:
        raise WorldssmError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    try:
        env = make(args.env, api="batched")
    except ValueError as exc:
        raise WorldssmError(f"--env {args.env!r}: {exc}") from exc
    src = ModelSource.of_preset(args.preset, space_to_dict(env.single_observation_space),
                                space_to_dict(env.single_action_space), seed=args.seed)
    env.close()
    return src, args.env


def _json_object(text: str, flag: str) -> dict:
    import json

    from worldssm.errors import WorldssmError

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorldssmError(f"{flag} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise WorldssmError(f"{flag} must be a JSON object, got {type(value).__name__}")
    return value


def _env_kwargs(text: str) -> dict:
    return _json_object(text, "--env-kwargs")


def _agents(text: str) -> int | dict:
    from worldssm.errors import WorldssmError

    if text.strip().lstrip("-").isdigit():
        return int(text)
    if not text.strip().startswith("{"):
        raise WorldssmError(f"--agents must be a number or a JSON object of counts, got {text!r}")
    return _json_object(text, "--agents")


def run(args) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from worldssm.atomic import atomic_write_text
    from worldssm.commands.flags import config_from_args
    from worldssm.errors import WorldssmError
    from worldssm.sim import SimConfig, Simulation

    if args.ticks < 1:
        raise WorldssmError(f"--ticks must be >= 1, got {args.ticks}")
    source, trained_on = _model_source(args)
    env = args.env or trained_on
    if not env:
        raise WorldssmError("the checkpoint names no env; pass --env")
    cfg = config_from_args(SimConfig, args, model=source, env=env, env_kwargs=_env_kwargs(args.env_kwargs),
                           agents=_agents(args.agents), agent_kwargs=_json_object(args.agent_kwargs, "--agent-kwargs"))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise WorldssmError(f"--out {out} is a file, not a directory")
    bar = None
    recent: list[float] = []

    def on_tick(res):
        recent.append(res.latency_ms)
        del recent[:-200]
        if bar is not None:
            bar.update(1)
            if res.tick % 10 == 0:
                lat = np.array(recent)
                bar.set_postfix(agents=res.agents, p50=f"{np.percentile(lat, 50):.2f}ms",
                                p99=f"{np.percentile(lat, 99):.2f}ms")

    with Simulation(cfg, address=args.address) as sim:
        out.mkdir(parents=True, exist_ok=True)
        if not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=args.ticks, unit="tick", desc=f"simulate {env} ({cfg.mode})")
        try:
            summary = sim.run(args.ticks, on_tick)
        finally:
            if bar is not None:
                bar.close()
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    lat = summary["latency_ms"]
    print(f"{summary['ticks']} ticks, {summary['agents_live']} agents live: {summary['ticks_per_s']:.1f} ticks/s, "
          f"{summary['agent_steps_per_s']:.0f} agent-steps/s, tick p50 {lat['p50']:.2f} ms p99 {lat['p99']:.2f} ms, "
          f"{summary['recoveries']} recoveries, engine step: {summary['engine']}")
    for name, r in summary["returns_by_agent"].items():
        print(f"  {name}: {r['episodes']} finished episodes, mean return {r['mean_return']:.3f}")
    print(f"summary: {out / 'summary.json'}")
    return 0
