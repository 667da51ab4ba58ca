"""`worldssm bench serve`: what a remote agent pays, over loopback.

Run as `worldssm bench serve [--agents 1 1024] [--clients 1 16 64] [--seconds S]`.

- Round trip: one client (this process) controls all of a world's agents (CartPole-v1 copies)
  and times `step` from send to result, for 1 and 1,024 agents; the server's own tick time is
  reported beside it, so the protocol's share is visible.
- Ticks per second with 1, 16 and 64 clients, each its own process (a socket + msgpack loop
  like `demos/remote_client.py`), each controlling one agent: every tick waits for all of them,
  so this is the rate at which the server gathers, steps and answers that many connections.

The server runs in a thread of this process (`worldssm.remote.server.Server`, deadline 1 s so no
tick falls back). Writes `serve-<time>.json` with medians and p99s and the load average.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import numpy as np

TOKEN = "bench-token-bench-token"

# A load client: only socket and msgpack (fast to start), stepping one agent as fast as it can.
LOAD = r"""
import socket, struct, sys, time, msgpack
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((host, port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
n = 0
def req(m):
    global n
    n += 1; m["id"] = n; p = msgpack.packb(m, use_bin_type=True); s.sendall(struct.pack("<I", len(p)) + p)
    h = b""
    while len(h) < 4: h += s.recv(4 - len(h))
    k = struct.unpack("<I", h)[0]; d = b""
    while len(d) < k: d += s.recv(k - len(d))
    r = msgpack.unpackb(d, raw=False, ext_hook=lambda c, b: None)
    assert r["kind"] != "error", r
    return r
req({"kind": "hello", "version": [1, 0], "token": sys.argv[4]})
a = str(req({"kind": "join", "n": 1})["agents"][0])
req({"kind": "reset", "agents": [int(a)], "seed": 0})
end, steps = time.perf_counter() + seconds, 0
while time.perf_counter() < end:
    r = req({"kind": "step", "actions": {a: steps % 2}})["results"][a]
    steps += 1
    if r["terminated"] or r["truncated"]:
        req({"kind": "reset", "agents": [int(a)], "seed": steps})
req({"kind": "leave"})
print(steps)
"""


def _serve(world):
    from worldssm.remote.server import ServerThread

    return ServerThread(world, TOKEN, deadline_ms=1000.0)


def round_trip(agents: int, steps: int) -> dict:
    from worldssm.remote import connect
    from worldssm.remote.world import World

    world = World("CartPole-v1", "real", agents)
    srv = _serve(world)
    try:
        conn = connect(f"127.0.0.1:{srv.server.port}", TOKEN)
        ids = conn.join(agents)["agents"]
        conn.reset(ids, 0)
        times, k = [], 0
        for k in range(steps + 20):
            actions = {i: (k + i) % 2 for i in ids}
            t0 = time.perf_counter()
            res = conn.step(actions)["results"]
            if k >= 20:
                times.append(time.perf_counter() - t0)
            ended = [i for i in ids if res[str(i)]["terminated"] or res[str(i)]["truncated"]]
            if ended:
                conn.reset(ended, k)
        tick = np.array(srv.server.stats["tick_ms"][20:])
        conn.close()
    finally:
        srv.close()
        world.close()
    t = np.array(times) * 1e3
    return {"agents": agents, "steps": len(t), "p50_ms": float(np.median(t)), "p99_ms": float(np.percentile(t, 99)),
            "server_tick_p50_ms": float(np.median(tick)), "agent_steps_per_s": float(agents / np.median(t) * 1e3)}


def throughput(clients: int, seconds: float) -> dict:
    from worldssm.remote.world import World

    world = World("CartPole-v1", "real", clients)
    srv = _serve(world)
    try:
        port = srv.server.port
        procs = [subprocess.Popen([sys.executable, "-c", LOAD, "127.0.0.1", str(port), str(seconds + 12), TOKEN],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(clients)]
        deadline = time.perf_counter() + 120
        while len(srv.server.owner) < clients and time.perf_counter() < deadline:  # all joined
            time.sleep(0.05)
        time.sleep(1.0)
        joined = len(srv.server.owner)
        t0, ticks0 = time.perf_counter(), srv.server.stats["ticks"]
        time.sleep(seconds)
        t1, ticks1 = time.perf_counter(), srv.server.stats["ticks"]
        if len(srv.server.owner) != clients or joined != clients:
            raise RuntimeError(f"{clients} clients were to step through the timed window; "
                               f"{joined} were there at its start and {len(srv.server.owner)} at its end")
        steps = []
        for p in procs:
            out, err = p.communicate(timeout=seconds + 120)
            if p.returncode != 0:
                raise RuntimeError(f"a load client failed: {err[-500:]}")
            steps.append(int(out.strip().splitlines()[-1]))
    finally:
        srv.close()
        world.close()
    return {"clients": clients, "seconds": t1 - t0, "ticks_per_s": (ticks1 - ticks0) / (t1 - t0),
            "agent_steps_per_s": (ticks1 - ticks0) * clients / (t1 - t0), "client_steps": steps}


def run(out_dir="tests/bench/results", agents=(1, 1024), clients=(1, 16, 64), seconds: float = 5.0,
        steps: int = 300) -> dict:
    from worldssm.bench.env import git_sha, save_result

    load = os.getloadavg()
    rows = []
    for n in agents:
        rows.append(round_trip(n, steps))
        r = rows[-1]
        print(f"{n:>5} agents, 1 client: step round trip p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms "
              f"(server tick p50 {r['server_tick_p50_ms']:.3f} ms)", flush=True)
    load_rows = []
    for c in clients:
        load_rows.append(throughput(c, seconds))
        r = load_rows[-1]
        print(f"{c:>5} clients (processes), 1 agent each: {r['ticks_per_s']:,.0f} ticks/s", flush=True)
    base = load_rows[0]["ticks_per_s"] if load_rows else None
    for r in load_rows:
        r["slowdown_vs_first"] = base / r["ticks_per_s"] if base and r["ticks_per_s"] else None
    import msgpack
    import torch

    result = {"bench": "serve", "git_sha": git_sha(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "device": "cpu", "cpus": os.cpu_count(), "platform": platform.platform(),
              "load_avg_before": load, "load_avg_after": os.getloadavg(),
              "versions": {"numpy": np.__version__, "msgpack": msgpack.version, "torch": torch.__version__,
                           "python": platform.python_version()},
              "setup": {"env": "CartPole-v1 (real copies)", "transport": "TCP loopback", "deadline_ms": 1000,
                        "steps_timed": steps, "seconds": seconds},
              "round_trip": rows, "clients": load_rows}
    save_result(result, out_dir, "serve")
    return result
