"""The `worldssm serve` server: remote clients control agents of a World over TCP.

One asyncio loop serves every connection. Each connection has a reader (frames, each complete
within `frame_timeout` seconds, so a slow-loris client is dropped) and a worker that answers its
requests one at a time in order (pipelined requests wait in a bounded queue). A `step` request
holds its agents' actions until the next tick; a tick runs when every client with live agents
has a step waiting, or `deadline_ms` after the first one arrived, whichever is first: agents
whose actions are late act with the fallback and are told so. A client that disconnects loses
its agents, which act with the fallback from then on; nothing else changes.

Security: loopback by default; a token is required at hello and compared in constant time;
frames above the cap are refused from their length prefix; payloads decode under bounded
msgpack limits (never pickle); at most `max_clients` connections (more are told "busy" and
closed); a client whose unread responses pass `max_unread` bytes is disconnected, so a client
that never reads cannot make the server hold memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
import time

from worldssm.remote.protocol import (
    DEFAULT_MAX_FRAME,
    HEADER,
    VERSION,
    ProtocolError,
    agent_list,
    decode,
    encode,
    frame_length,
    request_id,
)

CAPABILITIES = ["pipelining", "predictions", "fallback"]
SEND_BUFFER = 256 * 1024  # kernel send buffer per connection (bytes)


class Connection:
    """One client: its agents, its queue of requests, its writer."""

    def __init__(self, server, reader, writer, number: int):
        self.server, self.reader, self.writer, self.number = server, reader, writer, number
        self.agents: list[int] = []
        self.hello = False
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=server.max_pipeline)
        self.pending = None  # (actions, future) of the step waiting for the next tick
        self.late: dict[int, int] = {}  # agent -> ticks it acted with the fallback since its last result
        self.missed: dict[int, dict] = {}  # agent -> the result of the step that ended it while its client was late
        self.closed = False

    def send(self, message: dict) -> None:
        if self.closed:
            return
        try:
            data = encode(message, self.server.max_frame)
        except Exception as exc:  # noqa: BLE001 - too big, or a value the codec refuses: say so, in its place
            data = encode(ProtocolError("internal", f"the response could not be sent: {str(exc)[:200]}",
                                        request_id=message.get("id")).to_message())
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size() > self.server.max_unread:
            self.server.stats["dropped"] += 1
            self.close("not_reading")

    def close(self, why: str = "") -> None:
        """Close the connection; `why` is a short fixed reason (an error code), counted in stats."""
        if self.closed:
            return
        self.closed = True
        if why:
            reasons = self.server.stats["closed"]
            reasons[why] = reasons.get(why, 0) + 1
        self.server.disconnected(self, why)
        with contextlib.suppress(Exception):
            self.writer.close()


class Server:
    """Serve a World.

    Args:
        world: the `World` to step.
        token: the secret every client must send at hello.
        host, port: where to listen (port 0: any free port; `port` holds it after `start`).
        deadline_ms: how long a tick waits for late clients after the first step arrived.
        max_clients: connections at once.
        max_frame: the largest frame accepted or sent, in bytes.
        frame_timeout: seconds a frame may take to arrive once its first byte has.
        idle_timeout: seconds a connection may stay silent after hello (None: forever).
        hello_timeout: seconds each frame may take to start before hello is answered.
        max_pipeline: requests a client may have waiting.
        max_unread: bytes of responses a client may leave unread.
    """

    def __init__(self, world, token: str, host: str = "127.0.0.1", port: int = 0, deadline_ms: float = 100.0,
                 max_clients: int = 256, max_frame: int = DEFAULT_MAX_FRAME, frame_timeout: float = 10.0,
                 idle_timeout: float | None = None, max_pipeline: int = 64, max_unread: int = 16 * 2**20,
                 hello_timeout: float = 10.0):
        self.world, self.token, self.host, self.port = world, token.encode(), host, port
        self.deadline, self.max_clients, self.max_frame = deadline_ms / 1e3, max_clients, max_frame
        self.frame_timeout, self.idle_timeout, self.hello_timeout = frame_timeout, idle_timeout, hello_timeout
        self.max_pipeline, self.max_unread = max_pipeline, max_unread
        self.clients: set[Connection] = set()
        self.owner: dict[int, Connection] = {}  # agent -> the connection controlling it
        self._numbers = 0
        self._tick_timer = None
        self.stats = {"ticks": 0, "tick_ms": [], "connections": 0, "refused": 0, "errors": 0, "dropped": 0,
                      "closed": {}}  # dropped: clients that did not read; closed: connections closed, by reason
        self._server = None

    # ----- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=2**16)
        self.port = self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        async with self._server:
            await self._server.serve_forever()

    async def stop(self) -> None:
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._tick_timer = None
        for c in list(self.clients):
            c.close("stop")
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ----- connections -------------------------------------------------------------------------
    async def _accept(self, reader, writer) -> None:
        self._numbers += 1
        conn = Connection(self, reader, writer, self._numbers)
        if len(self.clients) >= self.max_clients:
            self.stats["refused"] += 1
            writer.write(encode(ProtocolError("busy", f"the server has {self.max_clients} clients, its limit",
                                              fatal=True).to_message()))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), 1.0)
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:  # the kernel's share of a client's unread responses is bounded too
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self.clients.add(conn)
        self.stats["connections"] += 1
        worker = asyncio.ensure_future(self._work(conn))
        try:
            await self._read(conn)
        except asyncio.CancelledError:
            pass  # the server is stopping: this connection ends like any other (asyncio's stream callback
            # would otherwise report the cancelled handler as an error)
        finally:
            conn.close()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker

    async def _read(self, conn: Connection) -> None:
        while not conn.closed:
            try:
                # Until hello is answered a connection holds a slot without proof of the token:
                # it gets `hello_timeout` seconds for each frame, so silent sockets cannot hold them all.
                wait = self.idle_timeout if conn.hello else self.hello_timeout
                header = await asyncio.wait_for(conn.reader.readexactly(HEADER.size), wait)
                n = frame_length(header, self.max_frame)
                payload = await asyncio.wait_for(conn.reader.readexactly(n), self.frame_timeout)
                message = decode(payload, self.max_frame)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except asyncio.TimeoutError:
                self._fatal(conn, ProtocolError("bad_frame", "a frame took too long to arrive", fatal=True))
                return
            except ProtocolError as exc:
                if exc.fatal:
                    self._fatal(conn, exc)
                    return
                message = exc  # answered by the worker, in its place among the requests
            if conn.queue.full():
                self._fatal(conn, ProtocolError("busy", f"more than {self.max_pipeline} requests waiting", fatal=True))
                return
            conn.queue.put_nowait(message)

    def _fatal(self, conn: Connection, exc: ProtocolError) -> None:
        self.stats["errors"] += 1
        conn.send(exc.to_message())
        conn.close(exc.code)

    def disconnected(self, conn: Connection, why: str) -> None:
        """A client is gone: its agents act with the fallback from now on."""
        self.clients.discard(conn)
        self._release(conn, list(conn.agents))
        if conn.pending is not None and not conn.pending[1].done():
            conn.pending[1].cancel()
        conn.pending = None
        self._maybe_tick()

    def _release(self, conn: Connection, ids: list[int]) -> None:
        """`conn` gives up `ids`: they act with the fallback, and one whose episode has ended
        starts its next one (as every agent nobody controls does)."""
        for i in ids:
            if i in conn.agents:
                conn.agents.remove(i)
            self.owner.pop(i, None)
            conn.late.pop(i, None)
            conn.missed.pop(i, None)
        self.world.release(ids)

    # ----- requests ----------------------------------------------------------------------------
    async def _work(self, conn: Connection) -> None:
        while True:
            message = await conn.queue.get()
            if isinstance(message, ProtocolError):  # a frame the reader could not take as a request
                self.stats["errors"] += 1
                conn.send(message.to_message())
                continue
            rid = message.get("id") if isinstance(message.get("id"), int) else None
            try:
                reply = await self._handle(conn, message)
            except ProtocolError as exc:
                exc.request_id = rid
                self.stats["errors"] += 1
                if exc.fatal:
                    self._fatal(conn, exc)
                    return
                conn.send(exc.to_message())
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug must not take the server down for everyone
                self._fatal(conn, ProtocolError("internal", f"{type(exc).__name__}: {exc}"[:300], fatal=True,
                                                request_id=rid))
                return
            conn.send(reply)

    async def _handle(self, conn: Connection, msg: dict) -> dict:
        kind = msg["kind"]
        if kind not in ("hello", "join", "reset", "step", "leave", "ping"):
            raise ProtocolError("unknown_kind", f"unknown message kind {kind[:40]!r}")
        rid = request_id(msg)
        if kind == "hello":
            return self._hello(conn, msg, rid)
        if not conn.hello:
            raise ProtocolError("order", "the first message must be hello", fatal=True)
        if kind == "ping":
            return {"kind": "pong", "id": rid, "tick": self.world.tick}
        if kind == "join":
            return self._join(conn, msg, rid)
        if kind == "leave":
            ids = self._own(conn, agent_list(msg.get("agents"), "agents"))
            self._release(conn, ids)
            self._maybe_tick()
            return {"kind": "left", "id": rid, "agents": ids}
        if kind == "reset":
            ids = self._own(conn, agent_list(msg.get("agents"), "agents"))
            obs = self.world.reset(ids, msg.get("seed"))
            for i in ids:
                conn.late.pop(i, None)
                conn.missed.pop(i, None)
            return {"kind": "reset_result", "id": rid, "obs": {str(i): o for i, o in obs.items()}, "info": {}}
        return await self._step(conn, msg, rid)

    def _hello(self, conn: Connection, msg: dict, rid: int) -> dict:
        version = msg.get("version")
        if not (isinstance(version, list) and len(version) == 2 and all(isinstance(v, int) for v in version)):
            raise ProtocolError("bad_message", "hello needs version [major, minor]", fatal=True)
        if version[0] != VERSION[0]:
            raise ProtocolError("version", f"client protocol {version[0]}.{version[1]}, server protocol "
                                           f"{VERSION[0]}.{VERSION[1]}: the major versions differ", fatal=True)
        token = msg.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.token):
            raise ProtocolError("auth", "wrong token", fatal=True)
        conn.hello = True
        w = self.world
        return {"kind": "welcome", "id": rid, "version": list(VERSION), "server": "worldssm",
                "capabilities": CAPABILITIES, "env": w.env_id, "mode": w.mode,
                "agents_free": w.n - len(self.owner), "deadline_ms": self.deadline * 1e3,
                "max_frame": self.max_frame}

    def _join(self, conn: Connection, msg: dict, rid: int) -> dict:
        n = msg.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ProtocolError("bad_message", f"join needs n >= 1 agents, got {n!r}")
        free = [i for i in range(self.world.n) if i not in self.owner]
        if len(free) < n:
            raise ProtocolError("no_agents", f"{n} agents asked for, {len(free)} free of {self.world.n}")
        ids = free[:n]
        for i in ids:
            self.owner[i] = conn
        conn.agents += ids
        return {"kind": "specs", "id": rid, "agents": ids, "observation_space": self.world.observation_space,
                "action_space": self.world.action_space}

    def _own(self, conn: Connection, ids) -> list[int]:
        if ids is None:
            return list(conn.agents)
        ids = list(dict.fromkeys(ids))  # each once
        self.world.check_ids(ids)
        foreign = [i for i in ids if self.owner.get(i) is not conn]
        if foreign:
            raise ProtocolError("unknown_agent", f"agent {foreign[0]} is not yours")
        return ids

    async def _step(self, conn: Connection, msg: dict, rid: int) -> dict:
        raw = msg.get("actions")
        if not isinstance(raw, dict) or len(raw) > len(conn.agents):
            raise ProtocolError("bad_message", "step needs actions {agent id (as a string): action} for your agents")
        actions, missed = {}, {}
        for key, action in raw.items():
            if not (key.isascii() and key.isdigit()) or len(key) > 16:
                raise ProtocolError("bad_message", f"agent keys are decimal ids, got {key[:20]!r}")
            i = int(key)
            if self.owner.get(i) is not conn:
                raise ProtocolError("unknown_agent", f"agent {i} is not yours")
            if i in conn.missed:  # it ended while its client was late: that result, not a new step
                missed[i] = None
            elif self.world.done[i]:
                raise ProtocolError("bad_action", f"agent {i}'s episode has ended: reset it first")
            else:
                actions[i] = self.world.check_action(i, action)
        for i in missed:
            r = conn.missed.pop(i)
            r["late"] = conn.late.pop(i, 0)
            missed[i] = r
        results = {}
        if actions:
            future = asyncio.get_running_loop().create_future()
            conn.pending = (actions, future)
            self._maybe_tick()
            results = await future
        results.update({str(i): r for i, r in missed.items()})
        return {"kind": "step_result", "id": rid, "tick": self.world.tick, "results": results}

    # ----- ticks -------------------------------------------------------------------------------
    def _maybe_tick(self) -> None:
        waiting = [c for c in self.clients if c.pending is not None]
        if not waiting:
            return
        needed = [c for c in self.clients if any(not self.world.done[i] for i in c.agents)]
        if all(c.pending is not None for c in needed):
            self._tick()
        elif self._tick_timer is None:
            self._tick_timer = asyncio.get_running_loop().call_later(self.deadline, self._tick)

    def _tick(self) -> None:
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._tick_timer = None
        waiting = [c for c in self.clients if c.pending is not None]
        if not waiting:
            return
        t0 = time.perf_counter()
        actions = {i: a for c in waiting for i, a in c.pending[0].items()}
        try:
            results, late = self.world.step(actions, set(self.owner))
        except Exception as exc:  # noqa: BLE001 - an env or the model failed: every waiting step hears it
            self.stats["errors"] += 1
            for c in waiting:
                _, future = c.pending
                c.pending = None
                if not future.done():
                    future.set_exception(ProtocolError("internal", f"the world failed to step: "
                                                                   f"{type(exc).__name__}: {exc}"[:300]))
            return
        for i in late:
            c = self.owner.get(i)
            if c is not None:
                c.late[i] = c.late.get(i, 0) + 1
                r = results.get(i)
                if r is not None and (r["terminated"] or r["truncated"]):
                    c.missed[i] = dict(r)  # its client was late for the step that ended it
        for c in waiting:
            out = {}
            for i in c.agents:
                if i in results:
                    r = dict(results[i])
                    r["late"] = c.late.pop(i, 0)
                    out[str(i)] = r
            _, future = c.pending
            c.pending = None
            if not future.done():
                future.set_result(out)
        self.stats["ticks"] += 1
        ms = self.stats["tick_ms"]
        ms.append((time.perf_counter() - t0) * 1e3)
        if len(ms) > 10_000:
            del ms[:5_000]


class ServerThread:
    """A Server on its own event-loop thread of this process (tests, benchmarks, notebooks):
    listening when the constructor returns, at `address`; `close()` stops it."""

    def __init__(self, world, token: str, **kwargs):
        import threading

        self.world, self.server = world, Server(world, token, **kwargs)
        self.loop = asyncio.new_event_loop()
        ready, failed = threading.Event(), []

        def run():
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self.server.start())
            except Exception as exc:  # noqa: BLE001 - handed to the constructor's thread
                failed.append(exc)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True, name="worldssm-serve")
        self.thread.start()
        ready.wait(60)
        if failed:
            raise failed[0]
        self.address = f"{self.server.host}:{self.server.port}"

    def close(self) -> None:
        async def stop():
            await self.server.stop()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:  # the connections' readers and workers
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()
