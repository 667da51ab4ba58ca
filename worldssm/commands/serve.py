"""worldssm serve: let agents in other processes drive agents of a real env or a dream over TCP."""

from __future__ import annotations

from worldssm.choices import FALLBACKS, MODES, TORCH_DEVICES

HELP = "serve a real env, a dream or both to remote agents (versioned msgpack protocol, token required)"


def configure(parser) -> None:
    parser.add_argument("--checkpoint", default=None, help="run directory: its model dreams (and predicts for real agents)")
    parser.add_argument("--env", default=None, help="Gymnasium id of the real agents (default: the model's env)")
    parser.add_argument("--mode", choices=MODES, default="real",
                        help="real: copies of the env; dream: the model is the env; mixed: half each")
    parser.add_argument("--agents", type=int, default=16, help="agents in the world (clients take control of them)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback by default)")
    parser.add_argument("--port", type=int, default=7447, help="port (0: any free port)")
    parser.add_argument("--port-file", default=None, help="write the port listened on to this file")
    parser.add_argument("--token-file", default=None,
                        help="read the token from this file (default: $WORLDSSM_TOKEN, else a new one is printed)")
    parser.add_argument("--deadline-ms", type=float, default=100.0,
                        help="a tick waits this long for late clients; their agents then act with the fallback")
    parser.add_argument("--fallback", choices=FALLBACKS, default="repeat",
                        help="how an agent acts without its client's action: its last action, or a random one")
    parser.add_argument("--max-clients", type=int, default=256, help="connections at once")
    parser.add_argument("--max-frame", type=int, default=4 * 2**20, help="largest frame in bytes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episodes and the fallback")
    parser.add_argument("--device", choices=TORCH_DEVICES, default="cpu", help="where the model runs")


def load_token(token_file) -> tuple[str, str]:
    """(token, where it came from): the file, $WORLDSSM_TOKEN, or a new random one."""
    import os
    import secrets
    from pathlib import Path

    from worldssm.errors import WorldssmError

    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise WorldssmError(f"--token-file {token_file}: {exc.strerror or exc}") from None
        where = f"from {token_file}"
    elif os.environ.get("WORLDSSM_TOKEN"):
        token, where = os.environ["WORLDSSM_TOKEN"].strip(), "from $WORLDSSM_TOKEN"
    else:
        token, where = secrets.token_urlsafe(24), "new"
    if len(token) < 16:
        raise WorldssmError(f"the token ({where}) has {len(token)} characters; use at least 16")
    return token, where


def run(args) -> int:
    import asyncio
    import ipaddress
    import warnings

    from worldssm.atomic import atomic_write_text
    from worldssm.errors import WorldssmError, WorldssmWarning
    from worldssm.remote import make_world
    from worldssm.remote.server import Server

    for name, low in (("agents", 1), ("max_clients", 1), ("max_frame", 1024)):
        if getattr(args, name) < low:
            raise WorldssmError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    if not args.deadline_ms > 0:
        raise WorldssmError(f"--deadline-ms must be > 0, got {args.deadline_ms}")
    if not 0 <= args.port <= 65535:
        raise WorldssmError(f"--port must be in 0..65535 (0: any free port), got {args.port}")
    if args.port_file:
        from worldssm.atomic import check_out_file

        check_out_file(args.port_file, "--port-file")
    token, where = load_token(args.token_file)
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        warnings.warn(f"listening on {args.host}, not loopback: anyone who can reach it and holds the token "
                      "controls agents", WorldssmWarning, stacklevel=1)
    world = make_world(args.checkpoint, args.env, args.mode, args.agents, args.fallback, args.seed, args.device)
    server = Server(world, token, args.host, args.port, deadline_ms=args.deadline_ms, max_clients=args.max_clients,
                    max_frame=args.max_frame)

    async def main():
        try:
            await server.start()
        except OSError as exc:  # the port is taken, the host is not an address of this machine, ...
            raise WorldssmError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
        if args.port_file:
            atomic_write_text(args.port_file, f"{server.port}\n")
        print(f"worldssm serve: {world.env_id}, {world.mode}, {world.n} agents; listening on "
              f"{args.host}:{server.port}; token {where}" + (f": {token}" if where == "new" else ""), flush=True)
        await server.serve_forever()

    try:
        asyncio.run(main())
    finally:
        world.close()
    return 0
