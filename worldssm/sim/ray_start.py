"""Starting or joining Ray safely: loopback, token authentication, no dashboard.

The only module besides `actors.py` (and the executors that drive actors) that imports Ray.
"""

from __future__ import annotations

import os
import sys

from worldssm.errors import WorldssmError, require


def start_ray(address: str | None = None, num_cpus: int | None = None, **kwargs):
    """Start (or join) Ray safely and return the `ray` module.

    A local start is bound to 127.0.0.1, has no dashboard, and has token authentication on:
    `RAY_AUTH_MODE=token` is set explicitly (Ray 2.52+ reads it; 2.59+ would enable tokens for
    local clusters by default, we do not rely on that), and Ray writes a token to
    `~/.ray/auth_token` (or uses `RAY_AUTH_TOKEN` / `RAY_AUTH_TOKEN_PATH`). Ray binds its ports to
    the node IP it resolves; on Linux it resolves "127.0.0.1" to the machine's outward address
    unless `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, which we set for local starts and for joining a
    cluster at a loopback address ("127.0.0.1:PORT", "localhost:PORT"; otherwise the join would
    dial the outward address, where a loopback cluster does not listen). Joining an existing
    cluster (`address`) needs that cluster's token; how it is bound is its own business.

    Works whether or not the caller imported `ray` first.

    Raises:
        WorldssmError: RAY_AUTH_MODE is set to something other than "token", or the started
            Ray is not on loopback.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        raise WorldssmError(f"RAY_AUTH_MODE={mode!r}: worldssm runs Ray only with token authentication")
    os.environ["RAY_AUTH_MODE"] = "token"
    imported_before = "ray" in sys.modules
    local = address is None
    loopback = local or address.rsplit(":", 1)[0] in ("127.0.0.1", "localhost")
    if loopback:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        if "ray" in sys.modules:  # constants were read at import: set the flag they hold too
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
    ray = require("ray", "ray[default]>=2.52")
    if ray.is_initialized():
        return ray
    if not local:
        _check_reachable(address)
    if imported_before:
        # Ray cached its config with the auth mode it saw at import: without a refresh this
        # driver would talk without a token to the cluster it starts with one (ray.init fails
        # with InvalidAuthToken). Ray refreshes its config the same way when it turns tokens on.
        from ray._raylet import Config

        Config.initialize("")
    if local:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=kwargs.pop("log_to_driver", False), **kwargs)
        ip = ray.get_runtime_context().worker.node.node_ip_address
        if ip != "127.0.0.1":
            ray.shutdown()
            raise WorldssmError(f"Ray bound to {ip}, not 127.0.0.1; refusing to run")
    elif loopback:
        ray.init(address=address, _node_ip_address="127.0.0.1", **kwargs)
    else:
        ray.init(address=address, **kwargs)
    return ray


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with the address named, when nothing listens at a cluster address (Ray itself
    retries for about a minute before it gives up with its own traceback)."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise WorldssmError(f"Ray address {address!r} is not HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise WorldssmError(f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}") from exc
