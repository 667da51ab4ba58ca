"""worldssm play: play inside a world model beside reality, in a pygame window."""

from __future__ import annotations

from worldssm.choices import TORCH_DEVICES

HELP = "play inside a world model beside reality (pygame window; no checkpoint: the bundled CartPole model)"

EPILOG = """keys: the window lists them. m human <-> agent, v view both/real/dream, p pause, n one step,
return reset, f fork a dream from reality, r record (.wsr shards that `worldssm train` takes),
[ ] re-sync every K steps (0: free), g sync now, t (swarm_v0) the selected agent dreams, a click
takes an agent over, h help, escape quit."""


def configure(parser) -> None:
    from worldssm.agents.planners import PLANNER_PRESETS

    import argparse

    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--checkpoint", default=None,
                        help="run or checkpoint directory (default: the small CartPole-v1 model shipped with worldssm)")
    parser.add_argument("--env", default=None, help="env to play (default: the one the model was trained on)")
    parser.add_argument("--env-kwargs", default=None, metavar="JSON",
                        help='the env\'s keyword arguments, e.g. \'{"obs_mode": "image"}\' for swarm_v0')
    parser.add_argument("--agents", type=int, default=None, help="swarm_v0: agents in the arena (default 24)")
    parser.add_argument("--agent", default=None,
                        help="who drives when you do not: planner, random, pattern, greedy (swarm_v0) or "
                             "package.module:Name (default: planner; greedy for swarm_v0)")
    parser.add_argument("--planner", choices=sorted(PLANNER_PRESETS), default="fast", help="the planner's preset")
    parser.add_argument("--drive", choices=("human", "agent"), default="human",
                        help="who drives at the start (m switches); agent: a run with --frames plays itself")
    parser.add_argument("--keymap", default=None, help="a keymap file (KEY = ACTION per line; see worldssm.play.keymap)")
    parser.add_argument("--fps", type=int, default=15, help="frames per second (0: no cap)")
    parser.add_argument("--context", type=int, default=16, help="real steps a dream is started from")
    parser.add_argument("--resync", type=int, default=0, help="set the dream to reality every K steps (0: free)")
    parser.add_argument("--forks", type=int, default=2, help="forks shown at once")
    parser.add_argument("--record-dir", default="recordings", help="where recordings go (r starts one)")
    parser.add_argument("--device", choices=TORCH_DEVICES, default="cpu", help="where the model runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episodes and the agents")
    parser.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--screenshot", default=None, metavar="PNG", help="save the window here when play ends")


def run(args) -> int:
    import json

    from worldssm.errors import WorldssmError
    from worldssm.play import open_app

    env_kwargs = None
    if args.env_kwargs:
        try:
            env_kwargs = json.loads(args.env_kwargs)
        except json.JSONDecodeError as exc:
            raise WorldssmError(f"--env-kwargs is not JSON: {exc}") from None
        if not isinstance(env_kwargs, dict):
            raise WorldssmError(f"--env-kwargs must be a JSON object, got {args.env_kwargs!r}")
    for name in ("fps", "context", "resync", "forks", "frames", "agents"):
        value = getattr(args, name)
        if value is not None and value < (1 if name in ("context", "frames", "agents") else 0):
            raise WorldssmError(f"--{name} must be >= {1 if name in ('context', 'frames', 'agents') else 0}, "
                                f"got {value}")
    from worldssm.atomic import check_out_dir, check_out_file

    if args.screenshot:
        check_out_file(args.screenshot, "--screenshot")
    check_out_dir(args.record_dir, "--record-dir")
    app = open_app(args.checkpoint, env=args.env, env_kwargs=env_kwargs, agents=args.agents, agent=args.agent,
                   keymap=args.keymap, fps=args.fps, context=args.context, resync=args.resync,
                   max_forks=args.forks, record_dir=args.record_dir, device=args.device, seed=args.seed,
                   planner=args.planner, human=args.drive == "human")
    try:
        while app.running and (args.frames is None or app.frames < args.frames):
            app.tick()
        if args.screenshot:
            print(f"wrote {app.screenshot(args.screenshot)}")
    finally:
        app.close()
    s = app.session
    print(f"played {app.frames} frames at {app.measured_fps:.1f} fps; {s.episode} episodes")
    for path in s.recorded_shards:
        print(f"recorded {path}")
    return 0
