"""worldssm simulate: run agents in real envs, in the model's dream, or both, over Ray actors."""

from __future__ import annotations

HELP = "run a multi-agent simulation (real | dream | mixed) on Ray actors; live tick rate, JSON summary"


def configure(parser) -> None:
    from worldssm.agents.registry import AGENTS, ENV_FREE
    from worldssm.engine.engine import ENGINE_IMPLS
    from worldssm.sim import SimConfig

    d = SimConfig()
    parser.add_argument("--checkpoint", help="run directory (or checkpoint dir) of a trained model")
    parser.add_argument("--preset", help="no checkpoint: an untrained model of this preset (smoke runs)")
    parser.add_argument("--env", help="env name (default: the checkpoint's env)")
    parser.add_argument("--agents", type=int, default=d.agents, help="agents at the start")
    parser.add_argument("--mode", default=d.mode, choices=["real", "dream", "mixed"], help="who steps the agents")
    parser.add_argument("--dream-fraction", type=float, default=d.dream_fraction, help="dream share in mixed mode")
    parser.add_argument("--ticks", type=int, default=100, help="ticks to run")
    parser.add_argument("--out", required=True, help="directory for summary.json")
    parser.add_argument("--agent", default=d.agent, choices=AGENTS, help="how real agents act")
    parser.add_argument("--dream-agent", default=None, choices=ENV_FREE, help="how dream agents act (default: --agent)")
    parser.add_argument("--env-actors", type=int, default=d.env_actors, help="EnvActors")
    parser.add_argument("--envs-per-actor", type=int, default=d.envs_per_actor, help="batched envs per EnvActor")
    parser.add_argument("--engine-actors", type=int, default=d.engine_actors, help="EngineActors (shards)")
    parser.add_argument("--engine-impl", choices=ENGINE_IMPLS, default=d.engine_impl,
                        help="the engine's step on CPU: auto (numpy where it can run), numpy, torch")
    parser.add_argument("--executor", default=d.executor, choices=["compiled", "plain"],
                        help="Ray Compiled Graph or plain actor calls")
    parser.add_argument("--backend", default=d.backend, choices=["ray", "local"], help="Ray, or in-process")
    parser.add_argument("--address", help="an existing Ray cluster (default: start a local one)")
    parser.add_argument("--snapshot-every", type=int, default=d.snapshot_every, help="ticks between snapshots")
    parser.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"], help="EngineActor device")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of envs, policies and sampling")
    parser.add_argument("--sample", action="store_true", help="draw latents instead of taking the mode")
    parser.add_argument("--no-progress", action="store_true", help="no live progress line")


def _model_source(args):
    from worldssm.errors import WorldssmError

    if args.checkpoint and args.preset:
        raise WorldssmError("give --checkpoint or --preset, not both")
    if args.checkpoint:
        from worldssm.checkpoint import load_checkpoint, resolve_checkpoint
        from worldssm.model import ModelSource

        sidecar = load_checkpoint(args.checkpoint)[0]
        src = ModelSource.of_checkpoint(resolve_checkpoint(args.checkpoint).resolve())
        return src, sidecar["data"].get("env_id")
    if not args.preset:
        raise WorldssmError("--checkpoint RUN is required (or --preset NAME for an untrained model)")
    if not args.env:
        raise WorldssmError("--preset needs --env to know the spaces")
    from worldssm.envs import make
    from worldssm.model import ModelSource
    from worldssm.spaces import space_to_dict

    env = make(args.env, api="batched")
    src = ModelSource.of_preset(args.preset, space_to_dict(env.single_observation_space),
                                space_to_dict(env.single_action_space), seed=args.seed)
    env.close()
    return src, args.env


def run(args) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from worldssm.sim import SimConfig, Simulation
    from worldssm.errors import WorldssmError
    from worldssm.atomic import atomic_write_text

    source, ckpt_env = _model_source(args)
    env = args.env or ckpt_env
    if not env:
        raise WorldssmError("the checkpoint names no env; pass --env")
    cfg = SimConfig(
        model=source, env=env, agents=args.agents, mode=args.mode, dream_fraction=args.dream_fraction,
        env_actors=args.env_actors, envs_per_actor=args.envs_per_actor, engine_actors=args.engine_actors,
        agent=args.agent, dream_agent=args.dream_agent, seed=args.seed, snapshot_every=args.snapshot_every, executor=args.executor,
        backend=args.backend, device=args.device, sample=args.sample, engine_impl=args.engine_impl,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=args.ticks, unit="tick", desc=f"simulate {env} ({args.mode})")
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
        try:
            summary = sim.run(args.ticks, on_tick)
        finally:
            if bar is not None:
                bar.close()
    summary["model"] = {"checkpoint": source.checkpoint} if source.checkpoint else {"preset": source.preset}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    lat = summary["latency_ms"]
    print(f"{summary['ticks']} ticks, {summary['agents_live']} agents live: {summary['ticks_per_s']:.1f} ticks/s, "
          f"{summary['agent_steps_per_s']:.0f} agent-steps/s, tick p50 {lat['p50']:.2f} ms p99 {lat['p99']:.2f} ms, "
          f"{summary['recoveries']} recoveries, engine step: {summary['engine']}")
    print(f"summary: {out / 'summary.json'}")
    return 0
