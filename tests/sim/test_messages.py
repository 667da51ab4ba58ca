"""Typed messages: every message round-trips through bytes, and damaged or mistyped bytes are
rejected with the message and field named."""

import dataclasses

import numpy as np
import pytest

from tests.sim.sim_helpers import model_source
from worldssm import codec
from worldssm.sim import messages as m

OBS = np.arange(6, dtype=np.float32).reshape(2, 3)


def examples():
    join = m.DreamJoin(ids=np.array([7, 9]), obs=OBS)
    snap = m.EngineSnapshot(tick=4, slab=[b"\x01\x02", b"\x03"], rng=np.arange(5, dtype=np.uint8), dream_ids=np.array([7, 9]),
                            dream_slots=np.array([0, 1]), dream_obs=OBS, dream_fresh=np.array([True, False]),
                            dream_reward=np.array([0.5, np.nan], np.float32), dream_cont=np.ones(2, np.float32))
    return [
        m.EnvActorSetup(index=1, env="Pendulum-v1", env_kwargs={"g": 9.0}, n_envs=2, agents_per_env=3,
                        kinds=[m.AgentKind(name="random", share=3, kwargs={}),
                               m.AgentKind(name="mypkg.agents:Greedy", share=1, kwargs={"speed": 2.0})],
                        row=0, seed=5, slots=np.arange(8), first_number=4, reuse_ids=np.array([3, 1]),
                        layout=np.array([0, 0, 1, 0, 0, 0])),
        m.EngineActorSetup(index=0, model=model_source(), capacity=64, device="cpu", sample=False, seed=2,
                           decode=True, agent=None, agent_kwargs={}, planner={"samples": 4, "horizon": 2},
                           torch_threads=1, impl="auto", state_dtype="bfloat16"),
        m.ActorSpaces(obs={"type": "discrete", "n": 3}, action={"type": "discrete", "n": 2}, impl="numpy", device="cpu"),
        join,
        m.Membership(tick=3, joins=[join], leave=np.array([5])),
        m.MembershipLog(ops=[m.Membership(tick=3, joins=[], leave=np.array([5]))]),
        snap,
        m.Predictions(values=np.arange(6, dtype=np.float32).reshape(2, 3)),
        m.Predictions(values=np.zeros((2, 3), np.float32), actions=np.ones((2, 1), np.float32)),
        m.EnvControl(tick=2, pred=m.Predictions(values=np.zeros((2, 3), np.float32)).to_bytes(),
                     ids=np.array([4]), actions=np.ones((1, 1), np.float32)),
        m.EnvControl(tick=2, pred=None),
        m.EngineControl(tick=9, snapshot=True, joins=[join], leave=np.array([1, 2])),
        m.EnvPayload(slots=np.array([0, 1]), obs=OBS, actions=np.array([1, 0]), resets=np.array([True, False])),
        m.EnvPayload(slots=np.array([0, 1]), obs=OBS, actions=np.array([1, 0]), resets=np.array([True, False]),
                     plan=np.array([False, True])),
        m.EnvReport(index=0, tick=3, live=np.array([1, 2]), joined=None, left=np.array([0]),
                    left_return=np.array([1.5], np.float32), act_ms=0.1, step_ms=0.2, t_act=1.0, t_acted=2.0, t_step=2.5,
                    t_out=3.0, left_kind=np.array([1])),
        m.EngineResult(index=0, tick=3, preds=[b"\x80"], dream_ids=None, dream_reward=None,
                       dream_cont=None, model_ms=0.3, engine_ms=0.4, snapshot=snap, t_in=1.0, t_out=2.0),
    ]


def same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("msg", examples(), ids=lambda x: type(x).__name__)
def test_round_trip(msg):
    back = type(msg).from_bytes(msg.to_bytes())
    assert same(msg, back)


def test_messages_are_frozen():
    msg = examples()[7]
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.tick = 3


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.pop("slots"), r"EnvPayload: fields missing \['slots'\]"),
    (lambda d: d.update(extra=1), r"unknown \['extra'\]"),
    (lambda d: d.update(kind="env_report"), "expected a 'env_payload' message"),
    (lambda d: d.update(slots=np.array([0.0, 1.0])), r"EnvPayload.slots: expected dtype int64"),
    (lambda d: d.update(slots=[0, 1]), r"EnvPayload.slots: expected an array"),
    (lambda d: d.update(resets=np.ones((2, 1), bool)), r"EnvPayload.resets: expected 1 dims"),
    (lambda d: d.update(obs=np.array(["a", "b"])), None),  # the codec refuses to encode strings
])
def test_bad_fields_are_named(mutate, match):
    msg = next(x for x in examples() if isinstance(x, m.EnvPayload))
    obj = msg.to_obj()
    mutate(obj)
    if match is None:
        with pytest.raises(codec.CodecError):
            codec.packb(obj)
        return
    with pytest.raises(m.MessageError, match=match):
        m.EnvPayload.from_bytes(codec.packb(obj))


def test_nested_and_scalar_fields_are_checked():
    ctrl = m.EngineControl(tick=1, snapshot=False).to_obj()
    ctrl["joins"] = [{"kind": "dream_join", "ids": np.array([1]), "obs": "x"}]
    with pytest.raises(m.MessageError, match=r"EngineControl.joins\[0\].obs: expected an array"):
        m.EngineControl.from_bytes(codec.packb(ctrl))
    ctrl = m.EngineControl(tick=1, snapshot=False).to_obj()
    ctrl["tick"] = True
    with pytest.raises(m.MessageError, match="EngineControl.tick: expected int, got bool"):
        m.EngineControl.from_bytes(codec.packb(ctrl))
    setup = next(x for x in examples() if isinstance(x, m.EngineActorSetup)).to_obj()
    setup["model"] = {"checkpoint": None, "preset": None}
    with pytest.raises(m.MessageError, match="EngineActorSetup.model: ModelSource needs exactly one"):
        m.EngineActorSetup.from_bytes(codec.packb(setup))
    spaces = m.ActorSpaces(obs={"type": "discrete", "n": 3}, action={"type": "discrete", "n": 2}).to_obj()
    spaces["obs"] = {"type": "discrete", "n": 0}
    with pytest.raises(m.MessageError, match="ActorSpaces.obs: discrete space needs a positive int n"):
        m.ActorSpaces.from_bytes(codec.packb(spaces))


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", codec.packb([1, 2]), "text"])
def test_garbage_is_a_message_error(data):
    with pytest.raises(m.MessageError):
        m.EnvReport.from_bytes(data)


def test_schema_must_match_the_fields():
    with pytest.raises(TypeError, match="schema"):
        @m.message("broken", a=m.INT)
        class Broken(m.Message):
            a: int
            b: int


def test_engine_snapshot_pieces_rejoin(monkeypatch):
    """Slab bytes travel in pieces (msgpack's bin holds < 4 GiB) and come back whole."""
    monkeypatch.setattr(m.EngineSnapshot, "PIECE_BYTES", 4)
    data = bytes(range(10))
    assert m.EngineSnapshot.pieces(data) == [data[:4], data[4:8], data[8:]]
    e = np.zeros(0, np.int64)
    one = m.EngineSnapshot(tick=1, slab=m.EngineSnapshot.pieces(data), rng=np.zeros(1, np.uint8), dream_ids=e,
                           dream_slots=e, dream_obs=np.zeros((0, 3), np.float32), dream_fresh=np.zeros(0, bool),
                           dream_reward=np.zeros(0, np.float32), dream_cont=np.zeros(0, np.float32))
    assert m.EngineSnapshot.from_bytes(one.to_bytes()).slab_bytes == data
