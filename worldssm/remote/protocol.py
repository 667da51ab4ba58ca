"""The wire protocol of `worldssm serve` (version 1.0): frames, messages, errors.

A frame is a 4-byte little-endian unsigned payload length followed by the payload, one msgpack
map encoded by `worldssm.codec` (numpy arrays as ext type 42 with a dtype allow-list; never
pickle). A frame longer than the server's cap is refused from its length alone, before anything
is allocated; payloads decode under bounded msgpack lengths with string map keys.

Every message is a map with a string "kind". Requests carry an integer "id" (0 <= id < 2**53),
and the server answers each request with exactly one response carrying the same "id", in the
order the requests came (a client may send several before reading: pipelining).

| request | fields | response | fields |
|---|---|---|---|
| hello | version [major, minor], token, capabilities [str] | welcome | version, server, capabilities, env, mode, agents_free, deadline_ms, max_frame |
| join | n (agents to control) | specs | agents [int], observation_space, action_space (SPACE dicts) |
| reset | agents [int] or absent (all yours), seed (int or nil) | reset_result | obs {agent: array}, info {} |
| step | actions {agent: action} | step_result | tick, results {agent: {obs, reward, terminated, truncated, late, pred?}} |
| leave | agents [int] or absent (all yours) | left | agents [int] |
| ping | | pong | tick |

`error` (id of the request or nil, code, message, fatal) answers a request that cannot be
served; after a fatal error the server closes the connection. Agent ids are map keys as strings
of their decimal ids (msgpack maps here have string keys only). `late` counts the ticks since the
last result in which the agent's action did not arrive before the deadline, so the world acted
for it with the fallback. A major version other than the server's is refused at hello, naming
both versions.
"""

from __future__ import annotations

import struct

from worldssm import codec
from worldssm.errors import WorldssmError

VERSION = (1, 0)
HEADER = struct.Struct("<I")
DEFAULT_MAX_FRAME = 4 * 2**20
MAX_ID = 2**53
REQUESTS = ("hello", "join", "reset", "step", "leave", "ping")
RESPONSES = ("welcome", "specs", "reset_result", "step_result", "left", "pong", "error")
CODES = ("bad_frame", "bad_message", "unknown_kind", "version", "auth", "order", "bad_action", "unknown_agent",
         "no_agents", "busy", "internal")


class ProtocolError(WorldssmError):
    """A message the other side cannot serve: `code` (one of CODES), fatal or not."""

    def __init__(self, code: str, message: str, fatal: bool = False, request_id=None):
        super().__init__(f"{code}: {message}")
        self.code, self.detail, self.fatal, self.request_id = code, message, fatal, request_id

    def to_message(self) -> dict:
        return {"kind": "error", "id": self.request_id, "code": self.code, "message": self.detail,
                "fatal": self.fatal}


def limits(max_frame: int) -> codec.Limits:
    """msgpack bounds for a payload of at most `max_frame` bytes."""
    return codec.Limits(max_buffer_size=max_frame, max_str_len=4096, max_bin_len=max_frame,
                        max_array_len=2**16, max_map_len=2**16, max_ext_len=max_frame)


def encode(message: dict, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """One frame: length prefix and payload."""
    payload = codec.packb(message)
    if len(payload) > max_frame:
        raise ProtocolError("bad_frame", f"a {message.get('kind')} message of {len(payload):,} bytes is over "
                                         f"the frame cap of {max_frame:,}")
    return HEADER.pack(len(payload)) + payload


def frame_length(header: bytes, max_frame: int) -> int:
    """The payload length a 4-byte header declares (ProtocolError, fatal, above the cap)."""
    (n,) = HEADER.unpack(header)
    if n > max_frame:
        raise ProtocolError("bad_frame", f"frame of {n:,} bytes declared; the cap is {max_frame:,}", fatal=True)
    if n == 0:
        raise ProtocolError("bad_frame", "empty frame", fatal=True)
    return n


def decode(payload: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> dict:
    """The message of a payload: a map with a string "kind" (and an int "id" for requests)."""
    try:
        message = codec.unpackb(payload, limits(max_frame))
    except (codec.CodecError, ValueError) as exc:
        raise ProtocolError("bad_frame", f"payload is not a worldssm msgpack message: {str(exc)[:200]}",
                            fatal=True) from None
    if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
        rid = message.get("id") if isinstance(message, dict) else None
        valid = isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid < MAX_ID
        raise ProtocolError("bad_message", "a message is a map with a string 'kind'", request_id=rid if valid else None)
    return message


def request_id(message: dict):
    """A request's id (ProtocolError when absent or not an int in [0, 2**53))."""
    rid = message.get("id")
    if isinstance(rid, bool) or not isinstance(rid, int) or not 0 <= rid < MAX_ID:
        raise ProtocolError("bad_message", f"a {message['kind']!r} request needs an integer 'id' in [0, 2**53)")
    return rid


def agent_list(value, what: str) -> list[int] | None:
    """A list of agent ids from a message (None when absent)."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 2**16 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_ID for v in value):
        raise ProtocolError("bad_message", f"{what} must be a list of agent ids (ints >= 0)")
    return list(value)
