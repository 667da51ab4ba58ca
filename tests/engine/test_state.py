import numpy as np
import pytest
import torch

from worldssm.engine.state import SlabError, StateSlab

SPEC = {"0.conv": ((3, 7), torch.float32), "0.ssm": ((2, 4, 5), torch.bfloat16),
        "z": ((6,), torch.float64)}


def filled(capacity=8):
    slab = StateSlab(SPEC, capacity)
    slots = slab.join(capacity)
    g = torch.Generator().manual_seed(0)
    for t in slab.tensors.values():
        t[:capacity] = torch.randn(t[:capacity].shape, generator=g).to(t.dtype)
    return slab, slots


def test_join_leave_reuse_and_scratch():
    slab = StateSlab(SPEC, 4)
    assert slab.scratch_slot == 4 and slab.tensors["0.conv"].shape == (5, 3, 7)
    a = slab.join(3)
    assert a.tolist() == [0, 1, 2] and slab.num_free == 1
    slab.tensors["0.conv"][1] = 5.0
    slab.leave([1])
    assert slab.num_free == 2 and not slab.is_owned([1])[0]
    b = slab.join(1)
    assert b.tolist() == [1]
    assert torch.all(slab.tensors["0.conv"][1] == 0), "a joined slot starts from zero state"
    with pytest.raises(SlabError, match="free"):
        slab.join(3)


@pytest.mark.parametrize("bad", [[0, 0], [9], [-1], [[0]]])
def test_check_slots_rejects(bad):
    slab = StateSlab(SPEC, 4)
    slab.join(2)
    with pytest.raises(SlabError):
        slab.check_slots(np.array(bad))


def test_check_slots_rejects_unowned():
    slab = StateSlab(SPEC, 4)
    slab.join(2)
    with pytest.raises(SlabError, match="not an owned"):
        slab.check_slots(np.array([3]))


def test_reset_zeroes_only_those_slots():
    slab, _ = filled()
    before = {k: t.clone() for k, t in slab.tensors.items()}
    slab.reset([2, 5])
    for k, t in slab.tensors.items():
        assert torch.all(t[[2, 5]] == 0)
        keep = [0, 1, 3, 4, 6, 7]
        assert torch.equal(t[keep], before[k][keep])


def test_fork_copies_in_repeat_order():
    slab = StateSlab(SPEC, 10)
    src = slab.join(2)
    slab.tensors["0.conv"][src[0]] = 1.0
    slab.tensors["0.conv"][src[1]] = 2.0
    new = slab.fork(src, n=3)
    assert new.shape == (6,) and not set(new) & set(src)
    vals = slab.tensors["0.conv"][torch.as_tensor(new)][:, 0, 0].tolist()
    assert vals == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]


def test_snapshot_restore_bit_exact_bf16_and_into_other_slots():
    slab, _ = filled()
    data = slab.snapshot([6, 1, 3])
    other = StateSlab(SPEC, 5)
    dst = other.restore(data)
    for k, t in slab.tensors.items():
        got = other.tensors[k][torch.as_tensor(dst)]
        want = t[[6, 1, 3]]
        if t.dtype == torch.bfloat16:
            got, want = got.view(torch.int16), want.view(torch.int16)
        assert torch.equal(got, want), k
    same = StateSlab(SPEC, 8)
    assert same.restore(data, "same").tolist() == [6, 1, 3]
    assert same.is_owned([6, 1, 3]).all() and same.num_owned == 3



def test_large_states_travel_in_row_blocks_and_format_1_still_loads(monkeypatch):
    """A state over CHUNK_BYTES is cut into row blocks (msgpack's ext holds < 4 GiB: a BASE slab
    of 16,384 agents is 8.5 GiB) and restores bit-exact; a format-1 snapshot (one array per state)
    still loads; blocks that disagree are refused."""
    import worldssm.engine.state as state
    from worldssm import codec

    slab, _ = filled()
    monkeypatch.setattr(state, "CHUNK_BYTES", 3 * 7 * 4 * 3)  # three rows of "0.conv" per block
    data = slab.snapshot()
    doc = codec.unpackb(data)
    assert [b.shape[0] for b in doc["state"]["0.conv"]] == [3, 3, 2]
    other = StateSlab(SPEC, 8)
    other.restore(data, "same")
    bits = lambda x: x.view(torch.int16) if x.dtype == torch.bfloat16 else x  # noqa: E731
    for k, t in slab.tensors.items():
        assert torch.equal(bits(other.tensors[k][:8]), bits(t[:8])), k
    old = dict(doc, format=1, state={k: np.concatenate(v) for k, v in doc["state"].items()})
    assert StateSlab(SPEC, 8).restore(codec.packb(old), "same").tolist() == list(range(8))
    bad = dict(doc, state=dict(doc["state"], z=[doc["state"]["z"][0], doc["state"]["z"][1].astype(np.float32)]))
    with pytest.raises(SlabError, match="blocks differ"):
        StateSlab(SPEC, 8).restore(codec.packb(bad))


def test_restore_rejects_damage_and_other_spec_without_change():
    slab, _ = filled()
    data = slab.snapshot([0, 1])
    target = StateSlab(SPEC, 4)
    with pytest.raises(SlabError):
        target.restore(data[:-5])
    other = StateSlab({"0.conv": ((3, 8), torch.float32)}, 4)
    with pytest.raises(SlabError, match="spec"):
        other.restore(data)
    assert target.num_owned == 0 and other.num_owned == 0


def _tampered(data: bytes, key: str, change) -> bytes:
    from worldssm import codec

    doc = codec.unpackb(data)
    doc["state"][key] = [change(np.concatenate(doc["state"][key]))]
    return codec.packb(doc)


@pytest.mark.parametrize("key, change, match", [
    ("0.conv", lambda a: a.astype(np.float64), "dtype float64, this slab stores float32"),
    ("0.ssm", lambda a: a.astype(np.float32), "dtype float32, this slab stores int16"),
    ("0.conv", lambda a: np.where(np.arange(a.size).reshape(a.shape) == a.size - 1, np.nan, a).astype(a.dtype),
     "the row of slot 1 holds NaN"),
    ("z", lambda a: np.full_like(a, np.inf), "the row of slot 0 holds NaN or infinity"),
])
@pytest.mark.parametrize("where", [None, "same", "given"])
def test_restore_checks_dtypes_and_values_and_takes_no_slot(key, change, match, where):
    slab, _ = filled()
    data = _tampered(slab.snapshot([0, 1]), key, change)
    target = StateSlab(SPEC, 4)
    given = target.join(2) if where == "given" else None
    before = {k: t.clone() for k, t in target.tensors.items()}
    owned = target.num_owned
    with pytest.raises(SlabError, match=match):
        target.restore(data, given if where == "given" else where)
    assert target.num_owned == owned, "a rejected restore takes no slot"
    for k, t in target.tensors.items():
        assert torch.equal(t, before[k]), k


def test_grow_keeps_slots_and_state():
    slab, _ = filled(4)
    slab.leave([2])
    keep = slab.tensors["0.conv"][[0, 1, 3]].clone()
    slab.grow(6)
    assert slab.capacity == 6 and slab.scratch_slot == 6
    assert torch.equal(slab.tensors["0.conv"][[0, 1, 3]], keep)
    assert sorted(slab.join(3).tolist()) == [2, 4, 5]
