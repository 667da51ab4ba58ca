"""`worldssm bench step | scan | env | soak | tick | fidelity | dream | play | serve`: GPU kernel benchmarks, the
environment benchmark, the soak, the Ray tick and the world model's accuracy per env."""

from __future__ import annotations

import argparse

from worldssm.choices import BACKENDS, STATE_DTYPES, TORCH_DEVICES

HELP = "benchmark the fused step, the training scan, the environments or the Ray tick; writes JSON results"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the bench subcommands to `parser`."""
    sub = parser.add_subparsers(dest="bench", metavar="WHAT", required=True)
    step = sub.add_parser("step", help="backbone step for B agents: fused+graph vs references (CUDA)")
    step.add_argument("--out", default="tests/bench/results", help="directory for the JSON result")
    step.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024, 16384], help="agent counts B")
    step.add_argument("--reps", type=int, default=200, help="timed graph replays per row")
    step.add_argument("--no-compile", action="store_true", help="skip the torch.compile + graph arm")
    step.add_argument("--no-world-model", action="store_true", help="skip the whole world-model rows")
    step.add_argument("--backbones", action="store_true", help="also the whole world-model step with the GRU and "
                      "Transformer-KV (context 256, 4,096, 16,384) backbones")
    step.add_argument("--mega", action="store_true", help="also check and time the one-launch backbone step "
                      "(WORLDSSM_STEP_PATH=mega, up to 16 agents; opt-in: slower than the layer path so far)")
    scan = sub.add_parser("scan", help="scan forward+backward tokens/s: Triton vs references (CUDA)")
    scan.add_argument("--out", default="tests/bench/results", help="directory for the JSON result")
    scan.add_argument("--reps", type=int, default=20, help="timed forward+backward passes per row")
    scan.add_argument("--no-sequential", action="store_true", help="skip the slow sequential reference")
    env = sub.add_parser("env", help="environment steps/s (worldssm.bench.env)")
    env.add_argument("--out", default="tests/bench/results", help="directory for the JSON result")
    env.add_argument("--agents", type=int, nargs="+", default=[1, 64, 1024, 10000], help="population sizes")
    env.add_argument("--seconds", type=float, default=3.0, help="timed seconds per configuration")
    soak = sub.add_parser("soak", help="thousands of agents joining and leaving for minutes, memory watched")
    soak.add_argument("--out", default="tests/bench/results", help="directory for the JSON result")
    soak.add_argument("--backend", choices=BACKENDS, default="local", help="Simulation backend")
    soak.add_argument("--agents", type=int, default=10_000, help="agents at the start (half real, half dream)")
    soak.add_argument("--seconds", type=float, default=600.0, help="how long to run")
    soak.add_argument("--warmup-s", type=float, default=None, help="warm-up before memory is judged (default a fifth)")
    soak.add_argument("--sample-s", type=float, default=5.0, help="seconds between memory samples")
    soak.add_argument("--churn", type=int, default=None, help="dream agents leaving and joining per tick (default agents/200)")
    soak.add_argument("--kill", action="store_true", help="kill an EnvActor and an EngineActor during the run (ray)")
    fid = sub.add_parser("fidelity", help="world-model accuracy per env against naive predictors (worldssm.bench.fidelity)")
    fid.add_argument("--out", default="tests/bench/results", help="directory for the JSON and PNG results")
    fid.add_argument("--work", default="runs/fidelity", help="directory for the collected data and trained runs")
    fid.add_argument("--reevaluate", metavar="JSON", default=None,
                     help="evaluate the runs of this earlier result (in --work) again with this version's evaluation")
    fid.add_argument("--envs", default=None, help="comma-separated names of the suite (default: all)")
    fid.add_argument("--backbones", default="mamba2", help="comma-separated: mamba2, gru, transformer")
    fid.add_argument("--device", choices=TORCH_DEVICES, default="cpu", help="cpu: SMALL preset; cuda: BASE")
    fid.add_argument("--seed", type=int, default=0, help="seed of collection, training and evaluation")
    fid.add_argument("--train-steps", type=int, default=None,
                     help="training updates per env (default: each env's budget, worldssm.bench.fidelity.SUITE)")
    fid.add_argument("--resume", action="store_true",
                     help="train the runs an earlier call left in --work on to --train-steps (same data), then evaluate")
    serve = sub.add_parser("serve", help="remote agents: step round trip and ticks/s with many clients (worldssm.bench.serve)")
    serve.add_argument("--out", default="tests/bench/results", help="directory for the JSON result")
    serve.add_argument("--agents", type=int, nargs="+", default=[1, 1024], help="agents of the one-client round trip")
    serve.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64], help="client processes, one agent each")
    serve.add_argument("--seconds", type=float, default=5.0, help="timed seconds per client count")
    play = sub.add_parser("play", help="frames/s of worldssm play's whole loop, headless (worldssm.bench.play)")
    play.add_argument("--out", default="tests/bench/results", help="directory for the JSON result")
    play.add_argument("--device", choices=TORCH_DEVICES, default="cpu", help="where the model runs")
    play.add_argument("--scenarios", nargs="+", default=["vector", "pixel"], choices=["vector", "pixel"],
                      help="vector: the bundled CartPole model; pixel: Pong64 with an untrained model of the preset")
    play.add_argument("--frames", type=int, default=600, help="timed frames per scenario")
    play.add_argument("--checkpoint", default=None, help="the vector scenario's model (default: the bundled one)")
    dream = sub.add_parser("dream", help="DreamVectorEnv env-steps/s at 1 to 16,384 envs (worldssm.bench.dream)")
    dream.add_argument("--out", default="tests/bench/results", help="directory for the JSON result")
    dream.add_argument("--device", choices=TORCH_DEVICES, default="cpu", help="cpu: SMALL preset; cuda: BASE")
    dream.add_argument("--envs", type=int, nargs="+", default=[1, 64, 1024, 16384], help="numbers of envs")
    dream.add_argument("--seconds", type=float, default=3.0, help="timed seconds per configuration")
    dream.add_argument("--checkpoint", default=None, help="a trained run to dream with (default: an untrained preset)")
    dream.add_argument("--state-dtype", choices=STATE_DTYPES, default=None,
                       help="how the engine stores SSM states (default: the model's); bfloat16 adds a drift "
                       "measurement against float32 over 1,000 imagined steps")
    tick = sub.add_parser("tick", help="Ray tick latency: Compiled Graph vs plain calls (worldssm.bench.tick)")
    tick.add_argument("--out", default="tests/bench/results", help="directory for the JSON result")
    tick.add_argument("--agents", type=int, nargs="+", default=[16, 256, 4096], help="agent counts")
    tick.add_argument("--ticks", type=int, default=200, help="timed ticks per configuration")
    tick.add_argument("--warmup", type=int, default=20, help="untimed ticks first")
    tick.add_argument("--rounds", type=int, default=3, help="rounds per configuration on fresh actors (median reported)")
    tick.add_argument("--device", choices=TORCH_DEVICES, default="cpu",
                      help="cpu: DEBUG model, 2 EnvActors, --agents; cuda: BASE on the GPU, 4 EnvActors, 1,024 real, "
                      "16,384 dream and 16,384 mixed agents")
    tick.add_argument("--state-dtype", choices=STATE_DTYPES, default=None,
                      help="--device cuda: how the engine stores SSM states (default: the model's, float32)")


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark and print its table."""
    from pathlib import Path

    from worldssm.errors import WorldssmError

    out = Path(args.out)
    if out.exists() and not out.is_dir():  # found now, not after a 10-minute run
        raise WorldssmError(f"--out {out} is a file; it names the directory the JSON result goes to")
    if args.bench == "step":
        from worldssm.bench import step

        result = step.run(args.out, tuple(args.batches), args.reps, not args.no_compile, not args.no_world_model,
                          args.backbones, mega=args.mega)
        print(step.format_table(result))
    elif args.bench == "scan":
        from worldssm.bench import scan

        result = scan.run(args.out, scan.SHAPES, args.reps, not args.no_sequential)
        print(scan.format_table(result))
    elif args.bench == "soak":
        from worldssm.bench import soak

        if args.agents < 2 or not args.seconds > 0 or not args.sample_s > 0:
            raise WorldssmError("soak needs --agents >= 2 and positive --seconds and --sample-s")
        if args.warmup_s is not None and not 0 <= args.warmup_s <= args.seconds / 2:
            raise WorldssmError(f"--warmup-s {args.warmup_s} must lie in [0, --seconds / 2 = {args.seconds / 2:g}]: "
                                "memory growth is judged on the samples after the warm-up")
        if args.kill and args.backend != "ray":
            raise WorldssmError("--kill needs --backend ray")
        result = soak.run(args.out, args.backend, args.agents, args.seconds, args.warmup_s, args.sample_s,
                          args.churn, kill=args.kill)
        print(soak.line(result))
        print(f"wrote {result['path']}")
        return 0 if result["passed"] else 1
    elif args.bench == "fidelity":
        from worldssm.bench import fidelity

        envs = None if args.envs is None else [e.strip() for e in args.envs.split(",") if e.strip()]
        backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
        if args.reevaluate:
            if args.train_steps is not None or args.resume:
                raise WorldssmError(f"--{'resume' if args.resume else 'train-steps'} trains runs; --reevaluate "
                                    f"evaluates the runs of {args.reevaluate} as they were trained: pass one of them")
            result = fidelity.reevaluate(args.reevaluate, args.work, args.out)
        else:
            if args.resume and args.train_steps is None:
                raise WorldssmError("--resume needs --train-steps: how many updates the runs should reach")
            result = fidelity.run(envs, args.device, backbones, args.out, args.work, args.seed,
                                  train_steps=args.train_steps, resume=args.resume)
        print(f"wrote {result['path']}")
    elif args.bench == "dream":
        from worldssm.bench import dream

        result = dream.run(args.out, args.device, tuple(args.envs), args.seconds, checkpoint=args.checkpoint,
                           state_dtype=args.state_dtype)
        print(f"wrote {result['path']}")
    elif args.bench == "serve":
        from worldssm.bench import serve

        result = serve.run(args.out, tuple(args.agents), tuple(args.clients), args.seconds)
        print(f"wrote {result['path']}")
    elif args.bench == "play":
        from worldssm.bench import play

        result = play.run(args.out, args.device, tuple(args.scenarios), args.frames, checkpoint=args.checkpoint)
        print(f"wrote {result['path']}")
    elif args.bench == "tick":
        from worldssm.bench import tick

        if args.device == "cuda":
            result = tick.run_gpu(args.out, args.ticks, args.warmup, state_dtype=args.state_dtype)
        else:
            result = tick.run(args.out, tuple(args.agents), args.ticks, args.warmup, args.rounds)
        print(f"wrote {result['path']}")
    else:
        from worldssm.bench.env import run_env_bench

        result = run_env_bench(args.out, agents=tuple(args.agents), seconds=args.seconds)
        print(f"wrote {result.get('path', args.out)}")
    return 0
