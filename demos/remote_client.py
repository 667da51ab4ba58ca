"""A client of `worldssm serve` that needs only `socket` and `msgpack`: the protocol by example,
for writing a client in another language.

    worldssm serve --env CartPole-v1 --agents 4          # prints a token
    python demos/remote_client.py 127.0.0.1:7447 TOKEN   # plays episodes with a simple rule

Frames: a 4-byte little-endian length, then one msgpack map. Requests carry "kind" and an "id";
each gets one response with the same id, in order. Arrays (observations) arrive as msgpack ext
type 42: u8 dtype code, u8 ndim, ndim x u32 LE dims, then the raw little-endian values. Map keys
are strings, so agent ids are sent as decimal strings.
"""

import argparse
import socket
import struct
import sys

import msgpack

# dtype code -> (struct letter, size) for the arrays the server sends (worldssm.codec.DTYPE_CODES)
DTYPES = {1: ("?", 1), 2: ("B", 1), 3: ("b", 1), 4: ("H", 2), 5: ("h", 2), 6: ("I", 4), 7: ("i", 4),
          8: ("q", 8), 9: ("e", 2), 10: ("f", 4), 11: ("d", 8)}


def ext_hook(code, data):
    """An ext-42 array as nested lists (shape kept)."""
    if code != 42:
        return msgpack.ExtType(code, data)
    letter, size = DTYPES[data[0]]
    ndim = data[1]
    shape = struct.unpack_from(f"<{ndim}I", data, 2)
    count = 1
    for d in shape:
        count *= d
    flat = list(struct.unpack_from(f"<{count}{letter}", data, 2 + 4 * ndim))
    for d in reversed(shape[1:]):
        flat = [flat[i:i + d] for i in range(0, len(flat), d)]
    return flat


class Client:
    def __init__(self, address, token):
        host, port = address.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.next_id = 0
        self.welcome = self.request({"kind": "hello", "version": [1, 0], "token": token, "capabilities": []})

    def request(self, message):
        self.next_id += 1
        message["id"] = self.next_id
        payload = msgpack.packb(message, use_bin_type=True)
        self.sock.sendall(struct.pack("<I", len(payload)) + payload)
        (n,) = struct.unpack("<I", self.read(4))
        reply = msgpack.unpackb(self.read(n), raw=False, ext_hook=ext_hook, strict_map_key=True)
        if reply["kind"] == "error":
            raise RuntimeError(f"{reply['code']}: {reply['message']}")
        assert reply["id"] == self.next_id, "responses come in request order"
        return reply

    def read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        return data


def policy(obs, space):
    """CartPole-like rule for Discrete(2) (push towards the pole's lean), else the middle action."""
    if space["type"] == "discrete":
        if space["n"] == 2 and len(obs) >= 4:
            return 1 if obs[2] + 0.5 * obs[3] > 0 else 0
        return space["n"] // 2
    return [0.0] * space["shape"][0]


def main(argv=None):
    p = argparse.ArgumentParser(description="play episodes on a worldssm server with only socket and msgpack")
    p.add_argument("address", help="HOST:PORT")
    p.add_argument("token")
    p.add_argument("--episodes", type=int, default=3)
    args = p.parse_args(argv)
    client = Client(args.address, args.token)
    w = client.welcome
    print(f"connected: protocol {w['version']}, env {w['env']} ({w['mode']}), {w['agents_free']} agents free")
    specs = client.request({"kind": "join", "n": 1})
    agent, space = str(specs["agents"][0]), specs["action_space"]
    for episode in range(args.episodes):
        obs = client.request({"kind": "reset", "agents": specs["agents"], "seed": episode})["obs"][agent]
        total, steps, late = 0.0, 0, 0
        while True:
            result = client.request({"kind": "step", "actions": {agent: policy(obs, space)}})["results"][agent]
            obs, total, steps, late = result["obs"], total + result["reward"], steps + 1, late + result["late"]
            if result["terminated"] or result["truncated"]:
                break
        print(f"episode {episode}: return {total:.1f} in {steps} steps ({late} ticks on the fallback)")
    client.request({"kind": "leave"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
