"""Clients of `worldssm serve`: a blocking connection, and the env objects RL libraries take.

    from worldssm.remote import connect
    conn = connect("127.0.0.1:7447", token)
    env = conn.gym_env()               # one agent as a gymnasium.Env
    penv = conn.parallel_env(4)        # four agents as a PettingZoo ParallelEnv

Each env controls agents of the server's world; `reset` starts their episodes again (seeded),
`step` sends their actions and waits for the tick's result. `info["late"]` says how many ticks
an agent acted with the server's fallback because its action came after the deadline, and
`info["pred"]` holds the model's prediction for the step where the server runs one.
"""

from __future__ import annotations

import socket

import numpy as np

from worldssm.errors import WorldssmError, require
from worldssm.remote.protocol import DEFAULT_MAX_FRAME, HEADER, VERSION, ProtocolError, decode, encode, frame_length


def _address(address) -> tuple[str, int]:
    """("host", port) from "HOST:PORT" or "[IPv6]:PORT"."""
    if isinstance(address, tuple):
        return address
    host, _, port = str(address).rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit():
        raise WorldssmError(f"address must be HOST:PORT, got {address!r}")
    return host, int(port)


class Connection:
    """A blocking connection to a server (after a successful hello).

    Raises:
        ProtocolError: the server refused the hello (wrong token, another major version, busy).
        OSError: the server cannot be reached.
    """

    def __init__(self, address, token: str, timeout: float = 60.0, max_frame: int = DEFAULT_MAX_FRAME):
        self.sock = socket.create_connection(_address(address), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.max_frame, self._next = max_frame, 0
        try:
            self.welcome = self.request({"kind": "hello", "version": list(VERSION), "token": token,
                                         "capabilities": ["pipelining"]})
        except BaseException:
            self.sock.close()
            raise
        theirs = self.welcome.get("max_frame")
        if isinstance(theirs, int) and theirs > self.max_frame:  # the server's responses may be this large
            self.max_frame = theirs

    def send(self, message: dict) -> int:
        """Send a request without waiting; returns its id."""
        self._next += 1
        message = {**message, "id": self._next}
        self.sock.sendall(encode(message, self.max_frame))
        return self._next

    def receive(self) -> dict:
        """The next response (an error response raises ProtocolError). A read that fails part
        way (a timeout, a frame this client refuses) closes the connection: the stream could not
        be trusted to be at a frame boundary any more."""
        try:
            n = frame_length(self._read(HEADER.size), self.max_frame)
            message = decode(self._read(n), self.max_frame)
        except (OSError, ProtocolError):
            self.sock.close()
            raise
        if message["kind"] == "error":
            raise ProtocolError(str(message.get("code")), str(message.get("message")), bool(message.get("fatal")),
                                message.get("id"))
        return message

    def request(self, message: dict) -> dict:
        rid = self.send(message)
        try:
            reply = self.receive()
        except ProtocolError as exc:
            if exc.request_id not in (None, rid):
                self.sock.close()
                raise ProtocolError("order", f"an error for request {exc.request_id} came for request {rid}") from None
            raise
        if reply.get("id") != rid:
            self.sock.close()
            raise ProtocolError("order", f"response {reply.get('id')} to request {rid}")
        return reply

    def _read(self, n: int) -> bytes:
        chunks, got = [], 0
        while got < n:
            chunk = self.sock.recv(min(n - got, 2**20))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    # ----- the message set ---------------------------------------------------------------------
    def join(self, n: int = 1) -> dict:
        return self.request({"kind": "join", "n": n})

    def reset(self, agents=None, seed=None) -> dict:
        return self.request({"kind": "reset", "agents": agents, "seed": seed})

    def step(self, actions: dict) -> dict:
        return self.request({"kind": "step", "actions": {str(k): v for k, v in actions.items()}})

    def leave(self, agents=None) -> dict:
        return self.request({"kind": "leave", "agents": agents})

    def ping(self) -> dict:
        return self.request({"kind": "ping"})

    def close(self) -> None:
        self.sock.close()

    # ----- env objects -------------------------------------------------------------------------
    def gym_env(self):
        """One agent of the world as a `gymnasium.Env`."""
        return RemoteEnv(self)

    def parallel_env(self, n: int):
        """`n` agents of the world as a PettingZoo `ParallelEnv`."""
        return RemoteParallelEnv(self, n)


def connect(address, token: str, timeout: float = 60.0) -> Connection:
    """Connect to `worldssm serve` at "HOST:PORT" with its token."""
    return Connection(address, token, timeout)


def _spaces(specs: dict):
    from worldssm.spaces import space_from_dict

    return space_from_dict(specs["observation_space"]), space_from_dict(specs["action_space"])


def _action(space, action):
    """An action as the wire takes it: an int for Discrete, a float32 array for Box."""
    if hasattr(space, "n"):
        return int(action)
    return np.asarray(action, np.float32)


gym = require("gymnasium", "gymnasium>=1.0")


class RemoteEnv(gym.Env):
    """One remote agent as a Gymnasium env (`check_env` passes against a live server)."""

    metadata = {"render_modes": []}

    def __init__(self, conn: Connection):
        self.conn = conn
        specs = conn.join(1)
        self.agent = int(specs["agents"][0])
        self.observation_space, self.action_space = _spaces(specs)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:  # the next episode's seed comes from this env's own stream
            seed = int(self.np_random.integers(2**62))
        reply = self.conn.reset([self.agent], seed)
        return reply["obs"][str(self.agent)], {}

    def step(self, action):
        r = self.conn.step({self.agent: _action(self.action_space, action)})["results"][str(self.agent)]
        info = {"late": r["late"], **({"pred": r["pred"]} if "pred" in r else {})}
        return r["obs"], float(r["reward"]), bool(r["terminated"]), bool(r["truncated"]), info

    def close(self):
        try:
            self.conn.leave([self.agent])
        except (OSError, ProtocolError):
            pass


class RemoteParallelEnv:
    """`n` remote agents as a PettingZoo ParallelEnv (`parallel_api_test` passes against a live
    server). Agents are named "agent_<id>"; one that ends leaves `agents` until the next reset."""

    metadata = {"render_modes": [], "name": "worldssm_remote", "is_parallelizable": True}
    render_mode = None

    def __init__(self, conn: Connection, n: int):
        self.conn = conn
        specs = conn.join(n)
        self._ids = [int(i) for i in specs["agents"]]
        self.possible_agents = [f"agent_{i}" for i in self._ids]
        self._id = dict(zip(self.possible_agents, self._ids))
        self._obs_space, self._act_space = _spaces(specs)
        self.agents: list[str] = []
        self._seed_rng = np.random.default_rng()

    @property
    def unwrapped(self):
        return self

    def observation_space(self, agent):
        return self._obs_space

    def action_space(self, agent):
        return self._act_space

    @property
    def num_agents(self) -> int:
        return len(self.agents)

    @property
    def max_num_agents(self) -> int:
        return len(self.possible_agents)

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._seed_rng = np.random.default_rng(seed)
            self._obs_space.seed(seed)
            self._act_space.seed(seed)
        reply = self.conn.reset(self._ids, int(self._seed_rng.integers(2**62)))
        self.agents = list(self.possible_agents)
        return {a: reply["obs"][str(self._id[a])] for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict):
        live = [a for a in self.agents if a in actions]
        reply = self.conn.step({self._id[a]: _action(self._act_space, actions[a]) for a in live})
        obs, rew, term, trunc, info = {}, {}, {}, {}, {}
        for a in self.agents:
            r = reply["results"].get(str(self._id[a]))
            if r is None:
                continue
            obs[a], rew[a] = r["obs"], float(r["reward"])
            term[a], trunc[a] = bool(r["terminated"]), bool(r["truncated"])
            info[a] = {"late": r["late"], **({"pred": r["pred"]} if "pred" in r else {})}
        self.agents = [a for a in self.agents if a in obs and not (term[a] or trunc[a])]
        return obs, rew, term, trunc, info

    def render(self):
        return None

    def state(self):
        raise NotImplementedError("a remote world has no global state view")

    def close(self):
        try:
            self.conn.leave(self._ids)
        except (OSError, ProtocolError):
            pass
