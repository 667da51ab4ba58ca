"""Typed messages between the Simulation's driver and its actors.

Every message is a frozen dataclass that travels as msgpack bytes (`worldssm.codec`: arrays in
the project's ext type, never pickle). `to_bytes` encodes; `from_bytes` decodes and validates
every field once, on the receiving side, against the message's schema (type, array dtype and
rank, optional fields), raising `MessageError` that names the message and the field. A
receiver reads attributes, never `.get()` with a hidden default.

Per tick: the driver sends each EnvActor an `EnvControl` and each EngineActor an
`EngineControl`; an EnvActor sends its EngineActor an `EnvPayload` (o_t, a_t of its agents) and
the driver an `EnvReport`; an EngineActor answers the driver with an `EngineResult`. Setup and
recovery use `EnvActorSetup`, `EngineActorSetup`, `ActorSpaces`, `EngineSnapshot` and
`MembershipLog`. `Predictions` travel inside an EngineResult and an EnvControl as bytes that
only their receiver, the EnvActor, decodes (and so validates).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from worldssm import codec
from worldssm.errors import WorldssmError
from worldssm.model.loading import ModelSource
from worldssm.spaces import SpaceError, check_space_dict

_NO_IDS = np.zeros(0, np.int64)


class MessageError(WorldssmError, ValueError):
    """Bytes that are not a valid message of the kind expected."""


# ----- field checks ---------------------------------------------------------------------------
class _Bad(Exception):
    """A field check failed: `reason`, at `path` inside the field (e.g. "[0].obs")."""

    def __init__(self, reason: str, path: str = ""):
        super().__init__(reason)
        self.reason, self.path = reason, path


class _Check:
    """Validates (and where needed converts) one decoded field value; raises _Bad, which the
    message turns into a MessageError naming the message and the field (the location is only
    formatted when something is wrong: decoding runs every tick)."""

    needs_encode = False  # encode() changes the value (nested messages, the model source)

    def __call__(self, value: Any) -> Any:
        raise NotImplementedError

    def encode(self, value: Any) -> Any:
        return value


class _Scalar(_Check):
    def __init__(self, *types: type):
        self.types = types
        self.bool_ok = bool in types

    def __call__(self, value):
        if not isinstance(value, self.types) or (not self.bool_ok and isinstance(value, bool)):
            raise _Bad(f"expected {self.types[0].__name__}, got {type(value).__name__}")
        return value


class _Array(_Check):
    def __init__(self, dtype: str | None = None, ndim: int | None = None, kind: str | None = None):
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.ndim, self.kind = ndim, kind

    def __call__(self, value):
        if not isinstance(value, np.ndarray):
            raise _Bad(f"expected an array, got {type(value).__name__}")
        if self.dtype is not None and value.dtype != self.dtype:
            raise _Bad(f"expected dtype {self.dtype}, got {value.dtype}")
        if self.kind is not None and value.dtype.kind not in self.kind:
            raise _Bad(f"dtype {value.dtype} is not of kind {self.kind!r}")
        if self.ndim is not None and value.ndim != self.ndim:
            raise _Bad(f"expected {self.ndim} dims, got shape {value.shape}")
        return value


class _Optional(_Check):
    def __init__(self, inner: _Check):
        self.inner, self.needs_encode = inner, inner.needs_encode

    def __call__(self, value):
        return None if value is None else self.inner(value)

    def encode(self, value):
        return None if value is None else self.inner.encode(value)


class _ListOf(_Check):
    def __init__(self, inner: _Check):
        self.inner, self.needs_encode = inner, inner.needs_encode

    def __call__(self, value):
        if not isinstance(value, list):
            raise _Bad(f"expected a list, got {type(value).__name__}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(self.inner(v))
            except _Bad as exc:
                raise _Bad(exc.reason, f"[{i}]{exc.path}") from None
        return out

    def encode(self, value):
        return [self.inner.encode(v) for v in value]


class _Nested(_Check):
    needs_encode = True

    def __init__(self, cls: type[Message]):
        self.cls = cls

    def __call__(self, value):
        return self.cls._check(value)

    def encode(self, value):
        return value.to_obj()


class _Space(_Check):
    def __call__(self, value):
        try:
            check_space_dict(value)
        except SpaceError as exc:
            raise _Bad(str(exc)) from exc
        return value


class _Model(_Check):
    needs_encode = True

    def __call__(self, value):
        try:
            return ModelSource.from_dict(value)
        except (TypeError, ValueError) as exc:
            raise _Bad(str(exc)) from exc

    def encode(self, value):
        return value.to_dict()


class _Dict(_Check):
    def __call__(self, value):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _Bad("expected a map with string keys")
        return value


INT, FLOAT, BOOL, STR, BYTES = _Scalar(int), _Scalar(float, int), _Scalar(bool), _Scalar(str), _Scalar(bytes)
IDS = _Array("int64", 1)  # agent ids or slots [n]
FLAGS = _Array("bool", 1)  # one flag per row [n]
F32 = _Array("float32")
NUMERIC = _Array(kind="biuf")  # observations, actions: validated against spaces by their users
SPACE, MODEL, DICT = _Space(), _Model(), _Dict()


def opt(check: _Check) -> _Check:
    return _Optional(check)


def list_of(check: _Check) -> _Check:
    return _ListOf(check)


def nested(cls: type[Message]) -> _Check:
    return _Nested(cls)


# ----- the base and the decorator -------------------------------------------------------------
class Message:
    """Base of every message; see the module docstring.

    Encoding and decoding run on every tick (several messages per actor), so both stay lean:
    fields are copied from the instance dict, only fields that need it (nested messages, the
    model source) are converted, and a decoded message is filled in without re-running the
    dataclass `__init__` (its values were just checked)."""

    KIND: ClassVar[str]
    SCHEMA: ClassVar[dict[str, _Check]]
    _ENCODE: ClassVar[tuple]  # (name, check) of the fields whose value needs converting
    _KEYS: ClassVar[frozenset]  # the keys of an encoded message

    def to_obj(self) -> dict:
        obj = dict(self.__dict__)
        obj["kind"] = self.KIND
        for name, check in self._ENCODE:
            obj[name] = check.encode(obj[name])
        return obj

    def to_bytes(self) -> bytes:
        return codec.packb(self.to_obj())

    @classmethod
    def from_obj(cls, obj: Any):
        """The message from decoded msgpack data; MessageError names the message and field."""
        try:
            return cls._check(obj)
        except _Bad as exc:
            raise MessageError(f"{cls.__name__}{exc.path}: {exc.reason}") from None

    @classmethod
    def _check(cls, obj: Any):
        if type(obj) is not dict or obj.get("kind") != cls.KIND:
            got = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
            raise _Bad(f"expected a {cls.KIND!r} message, got {got!r}")
        if obj.keys() != cls._KEYS:
            missing = sorted(set(cls.SCHEMA) - set(obj))
            extra = sorted(set(obj) - cls._KEYS)
            raise _Bad(f"fields missing {missing}, unknown {extra}")
        try:
            values = {name: check(obj[name]) for name, check in cls.SCHEMA.items()}
        except _Bad:
            cls._name_the_bad_field(obj)
            raise
        msg = cls.__new__(cls)
        msg.__dict__.update(values)  # a frozen dataclass's fields live in its __dict__
        return msg

    @classmethod
    def _name_the_bad_field(cls, obj: dict) -> None:
        """Check field by field (the slow path, after a failure) and raise naming the field."""
        for name, check in cls.SCHEMA.items():
            try:
                check(obj[name])
            except _Bad as exc:
                raise _Bad(exc.reason, f".{name}{exc.path}") from None

    @classmethod
    def from_bytes(cls, data: bytes):
        if not isinstance(data, bytes):
            raise MessageError(f"{cls.__name__}: expected bytes, got {type(data).__name__}")
        try:
            obj = codec.unpackb(data)
        except codec.CodecError as exc:
            raise MessageError(f"{cls.__name__}: {exc}") from exc
        return cls.from_obj(obj)


def message(kind: str, **schema: _Check):
    """Make the decorated class a frozen dataclass message of `kind` with a check per field."""

    def wrap(cls):
        cls = dataclass(frozen=True)(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        if names != list(schema):
            raise TypeError(f"{cls.__name__}: schema {list(schema)} does not match fields {names}")
        cls.KIND, cls.SCHEMA = kind, dict(schema)
        cls._KEYS = frozenset(schema) | {"kind"}
        cls._ENCODE = tuple((n, c) for n, c in schema.items() if c.needs_encode)
        return cls

    return wrap


# ----- setup and recovery ---------------------------------------------------------------------
@message("agent_kind", name=STR, share=INT, kwargs=DICT)
class AgentKind(Message):
    """One kind of agent of an EnvActor and its share of the rows."""

    name: str  # a name of worldssm.agents, "planner" (decided in the EngineActor) or an import path
    share: int  # relative share of the rows (SimConfig.agents' count)
    kwargs: dict  # keyword arguments (import-path agents)


@message("env_setup", index=INT, env=STR, env_kwargs=DICT, n_envs=INT, agents_per_env=INT,
         kinds=list_of(nested(AgentKind)), row=INT, seed=INT, slots=IDS, first_number=INT, reuse_ids=IDS,
         layout=IDS)
class EnvActorSetup(Message):
    """How to build an EnvActor's worker."""

    index: int  # this EnvActor's index (the owner in its agents' ids)
    env: str  # env name for worldssm.envs.make
    env_kwargs: dict  # extra env kwargs
    n_envs: int  # batched envs in this actor
    agents_per_env: int  # agents at reset per env
    kinds: list  # AgentKind: how its agents act, and in which shares
    row: int  # its position among the EnvActors feeding its EngineActor (its payload's index)
    seed: int  # seed of the envs and agents
    slots: np.ndarray  # int64 [S] the engine slots this actor's agents may use
    first_number: int = 0  # first per-owner number to mint (after a restart: past every id used)
    reuse_ids: np.ndarray = field(default_factory=lambda: _NO_IDS)  # ids for the first agents (restart)
    layout: np.ndarray = field(default_factory=lambda: _NO_IDS)  # int64 kinds of the rows at reset, env by env


@message("engine_setup", index=INT, model=MODEL, capacity=INT, device=STR, sample=BOOL, seed=INT,
         decode=BOOL, agent=opt(STR), agent_kwargs=DICT, planner=opt(DICT), torch_threads=INT, impl=STR,
         state_dtype=opt(STR))
class EngineActorSetup(Message):
    """How to build an EngineActor's worker."""

    index: int  # this EngineActor's index
    model: ModelSource  # where the world model comes from
    capacity: int  # slab slots
    device: str  # torch device
    sample: bool  # draw latents instead of taking their expectation
    seed: int  # engine and agent seed
    decode: bool  # decode dream agents' observations
    agent: str | None  # how dream agents act (None: no dream agent may join)
    agent_kwargs: dict  # keyword arguments of the dream agent (import paths)
    planner: dict | None  # PlannerConfig fields when agents plan here (real or dream), else None
    torch_threads: int  # torch CPU threads
    impl: str  # the engine's step (worldssm.engine.ENGINE_IMPLS)
    state_dtype: str | None = None  # the engine's SSM state storage (Engine's state_dtype); None: the model's


@message("spaces", obs=SPACE, action=SPACE, impl=opt(STR), device=opt(STR))
class ActorSpaces(Message):
    """An actor's observation and action spaces (and, from an EngineActor, which step runs)."""

    obs: dict  # SPACE dict
    action: dict  # SPACE dict
    impl: str | None = None  # Engine.impl
    device: str | None = None  # the engine's device


@message("dream_join", ids=IDS, obs=NUMERIC)
class DreamJoin(Message):
    """Dream agents joining at one EngineActor, with their start observations."""

    ids: np.ndarray  # int64 [n]
    obs: np.ndarray  # float32 [n, *obs_shape]


@message("membership", tick=INT, joins=list_of(nested(DreamJoin)), leave=IDS)
class Membership(Message):
    """One tick's dream joins and leaves at one EngineActor (leaves apply first)."""

    tick: int
    joins: list
    leave: np.ndarray  # int64 [k]

    @property
    def empty(self) -> bool:
        return not self.joins and self.leave.size == 0


@message("membership_log", ops=list_of(nested(Membership)))
class MembershipLog(Message):
    """Membership changes to replay on a restored EngineActor, oldest first."""

    ops: list


@message("engine_snapshot", tick=INT, slab=list_of(BYTES), rng=_Array("uint8", 1), dream_ids=IDS,
         dream_slots=IDS, dream_obs=NUMERIC, dream_fresh=FLAGS, dream_reward=F32, dream_cont=F32)
class EngineSnapshot(Message):
    """Everything an EngineActor needs to resume at `tick`."""

    tick: int
    slab: list  # StateSlab.snapshot bytes in pieces (`pieces`: msgpack's bin holds < 4 GiB)
    rng: np.ndarray  # the engine generator's state
    dream_ids: np.ndarray  # int64 [D]
    dream_slots: np.ndarray  # int64 [D]
    dream_obs: np.ndarray  # float32 [D, *obs_shape] the dream agents' current observations
    dream_fresh: np.ndarray  # bool [D] joined, start observation not observed yet
    dream_reward: np.ndarray  # float32 [D] the model's last reward prediction per dream agent
    dream_cont: np.ndarray  # float32 [D] and continue probability

    PIECE_BYTES = 1 << 30

    @classmethod
    def pieces(cls, data: bytes) -> list[bytes]:
        """`data` (StateSlab.snapshot bytes) cut into `slab` pieces."""
        return [data[i:i + cls.PIECE_BYTES] for i in range(0, len(data), cls.PIECE_BYTES)] or [b""]

    @property
    def slab_bytes(self) -> bytes:
        """The StateSlab.snapshot bytes, whole again."""
        return self.slab[0] if len(self.slab) == 1 else b"".join(self.slab)


# ----- the tick -------------------------------------------------------------------------------
@message("predictions", values=_Array("float32", 2), actions=opt(NUMERIC))
class Predictions(Message):
    """EngineActor -> EnvActor (the driver forwards the bytes unopened; with planning agents the
    EnvActor also reads them right away, before its env step): the model's predictions for the
    rows of the EnvActor's last payload, for the step they are about to arrive in."""

    values: np.ndarray  # float32 [2, n]: reward, and the probability that the episode goes on
    actions: np.ndarray | None = None  # the planners' actions for the payload's `plan` rows

    @property
    def reward(self) -> np.ndarray:
        return self.values[0]

    @property
    def cont(self) -> np.ndarray:
        return self.values[1]


@message("env_control", tick=INT, pred=opt(BYTES), ids=opt(IDS), actions=opt(NUMERIC))
class EnvControl(Message):
    """Driver -> EnvActor, each tick."""

    tick: int
    pred: bytes | None  # Predictions bytes from the EngineActor (None: none yet)
    ids: np.ndarray | None = None  # int64 [k] agents whose action is given (None: no overrides)
    actions: np.ndarray | None = None  # [k, ...] their actions


@message("engine_control", tick=INT, snapshot=BOOL, ids=opt(IDS), actions=opt(NUMERIC),
         joins=list_of(nested(DreamJoin)), leave=opt(IDS))
class EngineControl(Message):
    """Driver -> EngineActor, each tick."""

    tick: int
    snapshot: bool  # return a snapshot after this tick
    ids: np.ndarray | None = None  # int64 [k] dream agents whose action is given (None: no overrides)
    actions: np.ndarray | None = None  # [k, ...]
    joins: list = field(default_factory=list)  # DreamJoin, applied after the leaves
    leave: np.ndarray | None = None  # int64 dream agents leaving (None: none)


@message("env_payload", slots=IDS, obs=NUMERIC, actions=NUMERIC, resets=FLAGS, plan=opt(FLAGS))
class EnvPayload(Message):
    """EnvActor -> its EngineActor: what its agents saw and did this tick."""

    slots: np.ndarray  # int64 [n] engine slots
    obs: np.ndarray  # [n, *obs_shape] o_t
    actions: np.ndarray  # [n, ...] a_t (placeholders in `plan` rows)
    resets: np.ndarray  # bool [n] first step of an episode
    plan: np.ndarray | None = None  # bool [n]: rows whose a_t the EngineActor's planner decides


@message("env_report", index=INT, tick=INT, live=opt(IDS), joined=opt(IDS), left=opt(IDS),
         left_return=opt(F32), act_ms=FLOAT, step_ms=FLOAT, t_act=FLOAT, t_acted=FLOAT, t_step=FLOAT,
         t_out=FLOAT, left_kind=opt(IDS))
class EnvReport(Message):
    """EnvActor -> driver after its envs stepped. Empty joined / left travel as None (most ticks
    nobody joins or leaves). Timestamps are `time.perf_counter` (CLOCK_MONOTONIC): comparable
    across the processes of one host only."""

    index: int
    tick: int
    live: np.ndarray | None  # int64 [A] live agents after the step, in row order (None: unchanged)
    joined: np.ndarray | None  # int64 agents that joined this tick
    left: np.ndarray | None  # int64 agents that left this tick
    left_return: np.ndarray | None  # float32 their episode returns
    act_ms: float  # the agents' act (and payload packing)
    step_ms: float  # the env step
    t_act: float  # when the agents started to act
    t_acted: float  # when the payload was packed
    t_step: float  # start of the env step
    t_out: float  # when the report was packed
    left_kind: np.ndarray | None = None  # int64 how each agent that left acted: an index into SimConfig.mix


@message("engine_result", index=INT, tick=INT, preds=list_of(BYTES), dream_ids=opt(IDS),
         dream_reward=opt(F32), dream_cont=opt(F32), model_ms=FLOAT, engine_ms=FLOAT,
         snapshot=opt(nested(EngineSnapshot)), t_in=FLOAT, t_out=FLOAT)
class EngineResult(Message):
    """EngineActor -> driver after it observed and imagined."""

    index: int
    tick: int
    preds: list  # per EnvActor feeding it: Predictions bytes (for that EnvActor to decode)
    dream_ids: np.ndarray | None  # int64 [D] live dream agents (None: none)
    dream_reward: np.ndarray | None  # float32 [D]
    dream_cont: np.ndarray | None  # float32 [D]
    model_ms: float  # time in model calls
    engine_ms: float  # the whole tick inside the actor
    snapshot: EngineSnapshot | None  # when the control asked for one
    t_in: float
    t_out: float
