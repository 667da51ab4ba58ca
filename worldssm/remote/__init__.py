"""Remote agents: `worldssm serve` and its clients.

- `protocol`: frames and the versioned message set (the table in its docstring is the spec);
- `world`: the agents a server steps (Gymnasium copies, dreams of a model, or both);
- `server`: the asyncio server (tokens, deadlines, fallbacks, bounded everything);
- `client`: `connect(address, token)`, with `gym_env()` and `parallel_env(n)`.
"""

from __future__ import annotations


def connect(address, token: str, timeout: float = 60.0):
    """Connect to a `worldssm serve` server at "HOST:PORT" (see `worldssm.remote.client`)."""
    from worldssm.remote.client import connect as _connect

    return _connect(address, token, timeout)


def make_world(checkpoint=None, env: str | None = None, mode: str = "real", agents: int = 1, fallback: str = "repeat",
               seed: int = 0, device: str = "cpu", data=None, env_kwargs: dict | None = None):
    """A `World` for a run directory (its model and recorded data) and/or a Gymnasium id."""
    from worldssm.errors import WorldssmError
    from worldssm.remote.world import World

    model = contexts = None
    if checkpoint is not None:
        from worldssm.checkpoint import SIDECAR_FILE, read_sidecar, resolve_checkpoint

        env = env or read_sidecar(resolve_checkpoint(checkpoint) / SIDECAR_FILE)["data"]["env_id"]
        if mode == "real":
            from worldssm.model import load_model

            model, _ = load_model(checkpoint, device=device)
        else:
            from worldssm.dream import _source

            model, contexts = _source(checkpoint, data, 16, device)
    if env is None:
        raise WorldssmError("give --env, or a --checkpoint whose env is used")
    return World(env, mode=mode, agents=agents, model=model, contexts=contexts, fallback=fallback, seed=seed,
                 device=device, env_kwargs=env_kwargs)
