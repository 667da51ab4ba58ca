"""`worldssm serve` and its clients: the env APIs over the wire, deadlines and fallbacks, and a
server that stays up and fair under malformed, slow, flooding and non-reading clients."""

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from worldssm import codec
from worldssm.remote import connect, make_world
from worldssm.remote.protocol import ProtocolError, encode
from worldssm.remote.server import ServerThread

TOKEN = "a-test-token-of-some-length"


class Running(ServerThread):
    """A server on its own thread, with the test token."""

    def __init__(self, world, **kwargs):
        super().__init__(world, TOKEN, **kwargs)

    def connect(self, timeout=30.0):
        return connect(self.address, TOKEN, timeout)

    def close(self):
        super().close()
        self.world.close()


@pytest.fixture
def real():
    r = Running(make_world(env="CartPole-v1", mode="real", agents=6), deadline_ms=150)
    yield r
    r.close()


def test_check_env_passes_against_a_live_server(real):
    from gymnasium.utils.env_checker import check_env

    env = real.connect().gym_env()
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=5)
    again, _ = env.reset(seed=5)
    assert np.array_equal(obs, again)
    obs, reward, term, trunc, info = env.step(1)
    assert obs.shape == (4,) and reward == 1.0 and info["late"] == 0


def test_parallel_api_test_passes_against_a_live_server(real):
    pytest.importorskip("pettingzoo")
    from pettingzoo.test import parallel_api_test

    penv = real.connect().parallel_env(3)
    parallel_api_test(penv, num_cycles=40)
    assert penv.possible_agents == [f"agent_{i}" for i in range(3)]


def test_a_dream_is_served_with_check_env(pendulum_run):
    from gymnasium.utils.env_checker import check_env

    # One agent: check_env compares rewards bit for bit, and a dream stepped in one batch with
    # another agent's differs from one stepped alone in the last float32 bits (BLAS groups a
    # batch of 1 and of 2 differently; the expected latent carries such differences on).
    r = Running(make_world(pendulum_run, mode="dream", agents=1))
    try:
        env = r.connect().gym_env()
        assert np.isfinite(env.observation_space.low).all(), "a dream's observations are bounded"
        check_env(env, skip_render_check=True)
    finally:
        r.close()


def test_real_agents_get_the_models_prediction(pendulum_run):
    r = Running(make_world(pendulum_run, env="Pendulum-v1", mode="real", agents=1))
    try:
        env = r.connect().gym_env()
        env.reset(seed=0)
        _, _, _, _, info = env.step(np.array([0.5], np.float32))
        assert set(info["pred"]) == {"reward", "cont"} and 0 <= info["pred"]["cont"] <= 1
    finally:
        r.close()


def test_mixed_worlds_hold_real_agents_and_dreams(pendulum_run):
    r = Running(make_world(pendulum_run, env="Pendulum-v1", mode="mixed", agents=2))
    try:
        assert list(r.world.kind) == ["real", "dream"]
        penv = r.connect().parallel_env(2)
        obs, _ = penv.reset(seed=0)
        out = penv.step({a: np.array([0.1], np.float32) for a in penv.agents})
        assert set(out[0]) == {"agent_0", "agent_1"}
        assert "pred" in out[4]["agent_0"] and "pred" not in out[4]["agent_1"], "the real agent gets predictions"
    finally:
        r.close()


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_a_late_client_gets_the_fallback_and_is_told(real):
    fast, slow = real.connect(), real.connect()
    a = fast.join(1)["agents"][0]
    b = slow.join(1)["agents"][0]
    fast.reset([a], 0)
    slow.reset([b], 0)
    before = real.world.tick
    t0 = time.perf_counter()
    for _ in range(3):
        res = fast.step({a: 1})["results"]
        assert res[str(a)]["late"] == 0 and str(b) not in res
    waited = (time.perf_counter() - t0) / 3
    assert waited >= 0.1, "each tick waited for the slow client until the deadline"
    assert real.world.tick == before + 3
    res = slow.step({b: 0})  # ticks at once? no: the fast client is now the one not stepping
    assert res["results"][str(b)]["late"] == 3, "the slow client hears its agent acted 3 ticks without it"
    slow.close()
    t0 = time.perf_counter()
    fast.step({a: 1})
    assert time.perf_counter() - t0 < 0.1, "a client that left no longer holds ticks back"
    assert fast.ping()["tick"] == real.world.tick
    assert b not in real.server.owner, "its agent is free again (it acts with the fallback)"


def test_rejected_requests_change_nothing(real):
    c = real.connect()
    a = c.join(2)["agents"]
    c.reset(a, 1)
    world = real.world
    snap = ([o.copy() for o in world.obs], world.tick, world.done.copy())
    other = real.connect()
    o = other.join(1)["agents"][0]
    for actions, code in (({a[0]: 7, a[1]: 0}, "bad_action"), ({a[0]: 1.5, a[1]: 0}, "bad_action"),
                          ({a[0]: 1, o: 0}, "unknown_agent"), ({a[0]: np.array([1, 0]), a[1]: 0}, "bad_action"),
                          ({99: 0}, "unknown_agent")):
        with pytest.raises(ProtocolError) as err:
            c.step(actions)
        assert err.value.code == code and not err.value.fatal
    with pytest.raises(ProtocolError, match="not yours"):
        c.reset([o], 0)
    assert world.tick == snap[1] and np.array_equal(world.done, snap[2])
    assert all(np.array_equal(x, y) for x, y in zip(world.obs, snap[0]))
    assert c.ping()["kind"] == "pong", "the connection survives non-fatal errors"


def test_hello_refuses_wrong_tokens_and_versions(real):
    with pytest.raises(ProtocolError) as err:
        connect(real.address, "not-the-token-at-all")
    assert err.value.code == "auth" and err.value.fatal
    s = socket.create_connection(("127.0.0.1", real.server.port), timeout=10)
    s.sendall(encode({"kind": "hello", "id": 1, "version": [2, 0], "token": TOKEN}))
    reply = _read_frame(s)
    assert reply["code"] == "version" and "client protocol 2.0, server protocol 1.0" in reply["message"]
    s = socket.create_connection(("127.0.0.1", real.server.port), timeout=10)
    s.sendall(encode({"kind": "join", "id": 1, "n": 1}))
    assert _read_frame(s)["code"] == "order", "nothing before hello"


def _read_frame(s):
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (n,) = struct.unpack("<I", head)
    data = b""
    while len(data) < n:
        data += s.recv(n - len(data))
    return codec.unpackb(data)


def _garbage(rng, good_hello):
    """One malformed frame (bytes) of a random kind."""
    pick = rng.integers(12)
    if pick == 0:
        return struct.pack("<I", 2**31) + b"x"  # a huge declared length
    if pick == 1:
        return struct.pack("<I", 50) + rng.bytes(10)  # truncated
    if pick == 2:
        return rng.bytes(int(rng.integers(1, 200)))  # random bytes
    if pick == 3:
        payload = rng.bytes(int(rng.integers(1, 100)))
        return struct.pack("<I", len(payload)) + payload  # random payload
    if pick == 4:
        return encode({"kind": "fly", "id": 1})
    if pick == 5:
        return encode({"kind": "step", "id": 2, "actions": {"0": np.full(3, np.nan)}})
    if pick == 6:
        return encode({"kind": "step", "id": 2, "actions": [1, 2]})
    if pick == 7:
        return encode({"kind": 5, "id": 1})
    if pick == 8:
        return encode({"kind": "hello", "id": 1, "version": [1, 0], "token": "wrong-token-wrong-token"})
    if pick == 9:
        return good_hello + encode({"kind": "step", "id": 3, "actions": {"123456": 1}})
    if pick == 10:
        return good_hello + encode({"kind": "join", "id": 4, "n": 10**9})
    return struct.pack("<I", 0)


def test_fuzzed_frames_leave_the_server_up_and_fair(real):
    """Many connections send malformed frames while one client steps: its ticks go on, no agent
    changes because of the garbage, and every bad connection gets an error or is closed."""
    rng = np.random.default_rng(int(os.environ.get("WORLDSSM_FUZZ_SEED", "0")))
    seconds = float(os.environ.get("WORLDSSM_FUZZ_SECONDS", "3"))
    good = real.connect()
    a = good.join(1)["agents"][0]
    good.reset([a], 0)
    hello = encode({"kind": "hello", "id": 1, "version": [1, 0], "token": TOKEN})
    rss = _rss_mb()
    stop, sent = time.perf_counter() + seconds, 0
    ticks = []
    while time.perf_counter() < stop:
        s = socket.create_connection(("127.0.0.1", real.server.port), timeout=5)
        try:
            for _ in range(int(rng.integers(1, 4))):
                s.sendall(_garbage(rng, hello))
                sent += 1
            s.settimeout(0.5)
            try:
                s.recv(65536)  # an error message, or the close
            except (socket.timeout, ConnectionError):
                pass
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            s.close()
        t0 = time.perf_counter()
        res = good.step({a: int(rng.integers(2))})["results"][str(a)]
        ticks.append(time.perf_counter() - t0)
        if res["terminated"] or res["truncated"]:
            good.reset([a], 0)
    assert sent > 20
    grew = _rss_mb() - rss
    print(f"fuzz: {sent} malformed frames in {seconds:.0f} s, {len(ticks)} good ticks (p50 "
          f"{np.median(ticks) * 1e3:.2f} ms, max {max(ticks) * 1e3:.1f} ms), memory +{grew:.1f} MB, "
          f"{real.server.stats['errors']} errors sent")
    assert grew < 64, f"memory grew by {grew:.0f} MB"
    assert np.median(ticks) < 0.1, "the good client's ticks were not held up"
    assert real.server.stats["errors"] > 0
    assert good.ping()["kind"] == "pong"
    assert all(not real.world.done[i] for i in range(1, real.world.n) if i not in real.server.owner), \
        "the world's other agents went on"


def test_slow_loris_flood_and_non_readers_do_not_stall_the_tick(monkeypatch):
    import worldssm.remote.server as server_module

    # A small kernel send buffer per connection, so the pongs the reader never reads pass
    # max_unread in the server's own buffer after a few thousand, whatever the kernel would absorb.
    monkeypatch.setattr(server_module, "SEND_BUFFER", 4096)
    world = make_world(env="CartPole-v1", mode="real", agents=4)
    r = Running(world, deadline_ms=150, max_clients=6, frame_timeout=0.5, max_unread=64 * 1024)
    try:
        good = r.connect()
        a = good.join(1)["agents"][0]
        good.reset([a], 0)
        loris = socket.create_connection(("127.0.0.1", r.server.port), timeout=5)
        frame = encode({"kind": "hello", "id": 1, "version": [1, 0], "token": TOKEN})
        loris.sendall(frame[:5])  # the header and one byte, then nothing
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        reader.settimeout(5)
        reader.connect(("127.0.0.1", r.server.port))
        reader.sendall(frame)
        flood = [socket.create_connection(("127.0.0.1", r.server.port), timeout=5) for _ in range(8)]
        ping = encode({"kind": "ping", "id": 2})
        # Pings whose answers it never reads, in batches the queue takes, until the server drops it
        # (or a deadline the assertions below catch). A send that times out is the server busy
        # with the backlog: go on.
        end = time.monotonic() + 20

        def reader_dropped():
            return any(k in r.server.stats["closed"] for k in ("not_reading", "busy"))

        reader.settimeout(0.5)
        pending = b""
        while time.monotonic() < end and not reader_dropped():
            pending = pending or ping * 50
            try:
                pending = pending[reader.send(pending):]  # whole frames over partial sends
            except socket.timeout:
                continue
            except OSError:
                break  # the server closed it
            time.sleep(0.002)
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            res = good.step({a: 0})["results"][str(a)]
            times.append(time.perf_counter() - t0)
            if res["terminated"]:
                good.reset([a], 0)
        assert max(times) < 0.1, "no tick waited on the slow, flooding or non-reading clients"
        time.sleep(0.8)
        loris.settimeout(2)
        assert _read_frame(loris)["code"] == "bad_frame", "the slow-loris client is told and dropped"
        assert r.server.stats["refused"] >= 1, "connections beyond the limit are refused"
        assert _read_frame(flood[-1])["code"] == "busy", "and told why"
        why = r.server.stats["closed"]
        assert why.get("not_reading", 0) + why.get("busy", 0) >= 1, f"the client that never read was dropped ({why})"
        assert why.get("bad_frame", 0) >= 1, why
        assert len(r.server.clients) <= 6
    finally:
        r.close()


def test_serve_cli_listens_on_loopback_with_a_token(tmp_path):
    env = {**os.environ, "WORLDSSM_TOKEN": TOKEN}
    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, "-m", "worldssm", "serve", "--env", "CartPole-v1", "--agents", "2",
                             "--port", "0", "--port-file", str(port_file)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            if port_file.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert port_file.exists(), proc.stderr.read() if proc.poll() is not None else "no port file"
        port = int(port_file.read_text())
        c = connect(f"127.0.0.1:{port}", TOKEN)
        assert c.welcome["env"] == "CartPole-v1" and c.welcome["agents_free"] == 2
        env_ = c.gym_env()
        env_.reset(seed=0)
        assert env_.step(0)[0].shape == (4,)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert "listening on 127.0.0.1" in out and "token from $WORLDSSM_TOKEN" in out and TOKEN not in out
    wide = subprocess.Popen([sys.executable, "-m", "worldssm", "serve", "--env", "CartPole-v1", "--host", "0.0.0.0",
                             "--port", "0", "--port-file", str(tmp_path / "port2")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            if (tmp_path / "port2").exists() or wide.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        wide.terminate()
        _, err = wide.communicate(timeout=30)
    assert "listening on 0.0.0.0, not loopback" in err, err[-500:]
    short = subprocess.run([sys.executable, "-m", "worldssm", "serve", "--env", "CartPole-v1"],
                           env={**os.environ, "WORLDSSM_TOKEN": "short"}, capture_output=True, text=True, timeout=60)
    assert short.returncode == 2 and "use at least 16" in short.stderr


def test_the_dependency_free_demo_client_plays(real):
    demo = Path(__file__).resolve().parents[1] / "demos" / "remote_client.py"
    out = subprocess.run([sys.executable, str(demo), real.address, TOKEN, "--episodes", "2"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("episode") >= 2 and "return" in out.stdout
    text = demo.read_text()
    assert len(text.splitlines()) < 150
    assert "import worldssm" not in text and "from worldssm" not in text, "it needs only socket and msgpack"


def test_bench_serve_writes_round_trips_and_tick_rates(tmp_path):
    from worldssm.bench import serve

    result = serve.run(tmp_path, agents=(1, 8), clients=(1, 2), seconds=0.5, steps=30)
    assert [r["agents"] for r in result["round_trip"]] == [1, 8]
    assert all(r["p99_ms"] >= r["p50_ms"] > 0 for r in result["round_trip"])
    assert [r["clients"] for r in result["clients"]] == [1, 2]
    assert all(r["ticks_per_s"] > 0 and min(r["client_steps"]) > 0 for r in result["clients"])
    assert Path(result["path"]).exists()


def test_readme_remote_example_runs(real):
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Remote agents")[1].split("\n## ")[0]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0].replace("127.0.0.1:7447", real.address)
    scope = {"token": TOKEN}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["env"].observation_space.shape == (4,) and len(scope["penv"].possible_agents) == 4


def test_leave_and_disconnect_release_agents_cleanly(real):
    c = real.connect()
    ids = c.join(2)["agents"]
    assert c.leave([ids[0], ids[0]])["agents"] == [ids[0]], "an id given twice is left once"
    assert c.ping()["kind"] == "pong" and real.server.owner.get(ids[1]) is not None
    c.reset([ids[1]], 0)
    for _ in range(500):  # bad play ends a CartPole episode quickly
        if c.step({ids[1]: 0})["results"][str(ids[1])]["terminated"]:
            break
    assert real.world.done[ids[1]]
    c.close()
    deadline = time.time() + 5
    while real.server.owner.get(ids[1]) is not None and time.time() < deadline:
        time.sleep(0.01)
    assert not real.world.done[ids[1]], "an ended agent nobody controls starts its next episode"


def test_a_late_client_still_gets_the_step_that_ended_its_agent():
    world = make_world(env="CartPole-v1", mode="real", agents=2, fallback="random")
    r = Running(world, deadline_ms=5)
    try:
        fast, slow = r.connect(), r.connect()
        a, b = fast.join(1)["agents"][0], slow.join(1)["agents"][0]
        fast.reset([a], 0)
        slow.reset([b], 0)
        for _ in range(300):  # the slow agent acts at random without its client and soon falls
            res = fast.step({a: 1 if world.obs[a][2] > 0 else 0})["results"][str(a)]
            if res["terminated"] or res["truncated"]:
                fast.reset([a], 1)
            if world.done[b]:
                break
        assert world.done[b]
        got = slow.step({b: 0})["results"][str(b)]
        assert got["terminated"] and got["late"] > 0, "the terminal step it missed, and how many ticks it missed"
        assert slow.reset([b], 2)["obs"][str(b)].shape == (4,)
    finally:
        r.close()


def test_errors_keep_their_place_and_id_among_pipelined_requests(real):
    s = socket.create_connection(("127.0.0.1", real.server.port), timeout=10)
    s.sendall(encode({"kind": "hello", "id": 1, "version": [1, 0], "token": TOKEN}))
    assert _read_frame(s)["kind"] == "welcome"
    s.sendall(encode({"kind": "join", "id": 2, "n": 1}))
    agent = _read_frame(s)["agents"][0]
    s.sendall(encode({"kind": "reset", "id": 3, "seed": 0}))
    _read_frame(s)
    payload = codec.packb([1, 2, 3])
    s.sendall(encode({"kind": "step", "id": 4, "actions": {str(agent): 1}}) + struct.pack("<I", len(payload))
              + payload + encode({"kind": 5, "id": 6}) + encode({"kind": "ping", "id": 7}))
    replies = [_read_frame(s) for _ in range(4)]
    assert [(m["kind"], m["id"]) for m in replies] == [("step_result", 4), ("error", None), ("error", 6), ("pong", 7)]


def test_a_world_that_fails_to_step_fails_the_waiting_steps_not_the_server(real):
    c = real.connect()
    a = c.join(1)["agents"][0]
    c.reset([a], 0)
    step, calls = real.world.step, []

    def broken(*args):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("an env broke")
        return step(*args)

    real.world.step = broken
    with pytest.raises(ProtocolError) as err:
        c.step({a: 0})
    assert err.value.code == "internal" and not err.value.fatal and "an env broke" in err.value.detail
    assert c.step({a: 0})["results"][str(a)]["late"] == 0, "the next tick runs"


def test_silent_connections_cannot_hold_every_slot():
    r = Running(make_world(env="CartPole-v1", mode="real", agents=2), max_clients=3, hello_timeout=0.3)
    try:
        idle = [socket.create_connection(("127.0.0.1", r.server.port), timeout=5) for _ in range(3)]
        time.sleep(0.6)
        assert r.connect().welcome["kind"] == "welcome", "the silent ones were dropped before hello"
        for n in range(40):  # bad lengths with different numbers in their messages
            s = socket.create_connection(("127.0.0.1", r.server.port), timeout=5)
            s.sendall(struct.pack("<I", 2**30 + n))
            _read_frame(s)
            s.close()
        assert len(r.server.stats["closed"]) <= 4, "reasons are counted by code, not by message text"
        del idle
    finally:
        r.close()
