
import numpy as np
import pytest
import torch

from tests.engine.engine_helpers import DISC_ACT, debug_model, obs_actions
from tests.model.wm_helpers import randomise_parameters
from worldssm.engine.engine import Engine, EngineInputError


def engine(capacity=16, **kw):
    return Engine(debug_model(**{k: kw.pop(k) for k in ("act_space", "state_dtype") if k in kw}),
                  capacity, **kw)


def state_of(eng, slots):
    idx = torch.as_tensor(slots)
    return {k: t[idx].clone() for k, t in eng.slab.tensors.items()}


def assert_states_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_groupings_give_identical_states():
    """Stepping 6 agents together, one by one, or in shuffled subsets gives the same states."""
    obs, act = obs_actions(6, 5, seed=1)
    resets = np.zeros((5, 6), bool)
    resets[0] = True
    resets[3, 2] = True
    together, single, shuffled = engine(), engine(), engine()
    slots = [e.join(6) for e in (together, single, shuffled)]
    assert all((s == slots[0]).all() for s in slots)
    s = slots[0]
    rng = np.random.default_rng(0)
    out_t = out_s = out_p = None
    for t in range(5):
        out_t = together.observe(s, obs[t], act[t], resets[t]) if t < 3 else together.imagine(s, act[t])
        rows_s = []
        for i in range(6):
            if t < 3:
                rows_s.append(single.observe(s[i:i + 1], obs[t, i:i + 1], act[t, i:i + 1], resets[t, i:i + 1]))
            else:
                rows_s.append(single.imagine(s[i:i + 1], act[t, i:i + 1]))
        out_s = torch.cat([r.reward for r in rows_s])
        perm = rng.permutation(6)
        for part in (perm[:2], perm[2:]):
            if t < 3:
                o = shuffled.observe(s[part], obs[t, part], act[t, part], resets[t, part])
            else:
                o = shuffled.imagine(s[part], act[t, part])
            out_p = (part, o)
        part, o = out_p
        torch.testing.assert_close(o.reward, out_t.reward[torch.as_tensor(part)], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out_s, out_t.reward, rtol=1e-5, atol=1e-6)
    for e in (single, shuffled):
        for k, v in state_of(e, s).items():
            torch.testing.assert_close(v, state_of(together, s)[k], rtol=1e-5, atol=1e-6)
    assert state_of(together, s)["0.ssm"].abs().sum() > 0, "the states must actually move"


def test_subset_leaves_other_agents_untouched():
    eng = engine()
    s = eng.join(4)
    obs, act = obs_actions(4, 1)
    eng.observe(s, obs[0], act[0])
    before = state_of(eng, s[[1, 3]])
    eng.observe(s[[2, 0]], obs[0, [2, 0]], act[0, [2, 0]])
    eng.imagine(s[[0]], act[0, [0]])
    assert_states_equal(state_of(eng, s[[1, 3]]), before)


def test_fork_then_same_actions_same_future():
    eng = engine()
    s = eng.join(3)
    obs, act = obs_actions(3, 4, seed=2)
    for t in range(2):
        eng.observe(s, obs[t], act[t], np.full(3, t == 0))
    kids = eng.fork(s, 2)  # [a, a, b, b, c, c]
    parents = np.repeat(s, 2)
    assert_states_equal(state_of(eng, kids), state_of(eng, parents))
    futures = []
    for slots in (parents[::2], kids[::2], kids[1::2]):
        outs = [eng.imagine(slots, act[t]) for t in (2, 3)]
        futures.append(torch.stack([o.reward for o in outs] + [o.cont for o in outs]))
    assert torch.equal(futures[0], futures[1]) and torch.equal(futures[1], futures[2])


def test_fork_diverges_with_different_actions():
    eng = engine()
    s = eng.join(1)
    obs, act = obs_actions(1, 1)
    eng.observe(s, obs[0], act[0], np.ones(1, bool))
    k = eng.fork(s, 1)
    eng.imagine(s, np.array([[1.5]], np.float32))
    eng.imagine(k, np.array([[-1.5]], np.float32))
    assert not torch.equal(state_of(eng, s)["0.ssm"], state_of(eng, k)["0.ssm"])


@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16"])
def test_snapshot_restore_bit_exact(state_dtype):
    eng = engine(state_dtype=state_dtype)
    s = eng.join(5)
    obs, act = obs_actions(5, 6, seed=3)
    for t in range(3):
        eng.observe(s, obs[t], act[t], np.full(5, t == 0))
    data = eng.snapshot(s[[4, 0, 2]])
    fresh = engine(state_dtype=state_dtype)
    fresh.join(1)
    dst = fresh.restore(data)
    a = [eng.imagine(s[[4, 0, 2]], act[t, [4, 0, 2]], decode=True) for t in (3, 4)]
    b = [fresh.imagine(dst, act[t, [4, 0, 2]], decode=True) for t in (3, 4)]
    for x, y in zip(a, b):
        for f in ("z", "reward", "cont", "obs"):
            assert torch.equal(getattr(x, f), getattr(y, f)), f
    for k in eng.slab.tensors:
        got, want = state_of(fresh, dst)[k], state_of(eng, s[[4, 0, 2]])[k]
        if got.dtype == torch.bfloat16:
            got, want = got.view(torch.int16), want.view(torch.int16)
        assert torch.equal(got, want)


def test_numpy_and_torch_engines_agree_across_grow():
    """The numpy engine (its stored latents, and the slab views it takes again after `grow`)
    against the torch engine, on a model whose every parameter is random. The step itself is
    compared with the model in tests/model/test_numpy_step.py."""
    model = randomise_parameters(debug_model(act_space=DISC_ACT), seed=2)
    fast, ref = Engine(model, 4, impl="numpy"), Engine(model, 4, impl="torch")
    assert (fast.impl, ref.impl) == ("numpy", "torch")
    obs, act = obs_actions(6, 6, seed=5, act_space=DISC_ACT)
    slots = [e.join(3) for e in (fast, ref)]
    for t in range(6):
        if t == 3:  # new slab tensors: the numpy step must write these, not the old ones
            for e in (fast, ref):
                e.grow(10)
            slots = [np.concatenate([s, e.join(3)]) for s, e in zip(slots, (fast, ref))]
            assert fast.capacity == 10 and np.array_equal(*slots)
        n = slots[0].size
        resets = np.arange(n) == t % n
        outs = [e.observe(s, obs[t, :n], act[t, :n], resets, decode=True) for e, s in zip((fast, ref), slots)]
        rows = [4, 1] if n > 4 else [2, 0]  # a subset, out of order
        outs += [e.imagine(s[rows], act[t, rows], decode=True) for e, s in zip((fast, ref), slots)]
        for got, want in (outs[:2], outs[2:]):
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    assert outs[0].reward.std() > 0.1, "rewards must vary (the initial reward head is zero)"
    for o in outs[:2]:  # log_cont is the log of cont on both paths
        torch.testing.assert_close(o.log_cont.exp(), o.cont)
    for k in ref.slab.tensors:
        torch.testing.assert_close(fast.slab.tensors[k], ref.slab.tensors[k], rtol=1e-4, atol=1e-5)


def test_which_step_the_engine_runs():
    model = debug_model()
    assert Engine(model, 4).impl == "numpy"  # "auto" on CPU
    assert Engine(model, 4, sample=True).impl == "torch"
    assert Engine(debug_model(state_dtype="bfloat16"), 4).impl == "torch"
    with pytest.raises(ValueError, match="impl='numpy' cannot run this engine: latents are sampled"):
        Engine(model, 4, sample=True, impl="numpy")
    with pytest.raises(ValueError, match="impl must be one of"):
        Engine(model, 4, impl="fast")


def test_bfloat16_backbone_tracks_float32():
    """precision="bfloat16" casts the backbone only (SSM states, latents, heads stay float32; the
    conv states, past in-projection rows, are kept as the bfloat16 rows they are), runs the
    PyTorch step, and follows the float32 engine over 12 steps to bf16 rounding; "auto" on CPU
    is float32 (the numpy step)."""
    obs, act = obs_actions(4, 12, seed=3)
    ref = Engine(randomise_parameters(debug_model(), 0), 8)
    low = Engine(randomise_parameters(debug_model(), 0), 8, precision="bfloat16")
    assert (ref.precision, ref.impl) == ("float32", "numpy")
    assert (low.precision, low.impl) == ("bfloat16", "torch")
    assert low.model.backbone.final_norm.weight.dtype == torch.bfloat16
    assert low.model.in_proj.weight.dtype == torch.float32
    assert all(t.dtype == (torch.bfloat16 if k.endswith(".conv") else torch.float32)
               for k, t in low.slab.tensors.items())
    assert all(t.dtype == torch.float32 for t in ref.slab.tensors.values())
    s, s2 = ref.join(4), low.join(4)
    for t in range(12):
        first = np.full(4, t == 0)
        a, b = (ref.observe(s, obs[t], act[t], first), low.observe(s2, obs[t], act[t], first)) if t < 6 \
            else (ref.imagine(s, act[t]), low.imagine(s2, act[t]))
        assert b.reward.dtype == torch.float32
        torch.testing.assert_close(b.reward, a.reward, rtol=0.05, atol=0.05)
        torch.testing.assert_close(b.z, a.z, rtol=0.0, atol=0.05)
    assert not torch.equal(b.z, a.z)  # the casts happened: not the same arithmetic
    with pytest.raises(ValueError, match="precision must be one of"):
        Engine(debug_model(), 4, precision="fp8")


def _bad_calls(eng, s):
    obs, act = obs_actions(3, 1)
    o, a = obs[0], act[0]
    yield lambda: eng.observe(s, o[:2], a)  # wrong obs rows
    yield lambda: eng.observe(s, o, a[:, 0])  # wrong action shape
    yield lambda: eng.observe(s, o, a.astype(np.int64))  # wrong action dtype
    yield lambda: eng.observe(s, o, np.full((3, 1), np.nan, np.float32))
    yield lambda: eng.observe(s, o.astype(object), a)
    yield lambda: eng.observe(s, o, a, np.zeros(3, np.int64))  # resets not bool
    yield lambda: eng.observe(np.array([s[0], 99]), o[:2], a[:2])  # unknown slot
    yield lambda: eng.observe(np.array([s[0], s[0]]), o[:2], a[:2])  # repeated slot
    yield lambda: eng.imagine(s, a[:2])
    yield lambda: eng.imagine(s, "left")
    # finite in float64, inf in the float32 the model computes in
    big = o.astype(np.float64)
    big[1, 0] = 1e39
    yield lambda: eng.observe(s, big, a)
    yield lambda: eng.observe(s, o, np.full((3, 1), 1e39))
    yield lambda: eng.imagine(s, np.full((3, 1), -1e39))


def test_rejected_call_changes_no_state():
    eng = engine()
    s = eng.join(3)
    obs, act = obs_actions(3, 1)
    eng.observe(s, obs[0], act[0], np.ones(3, bool))
    before = {k: t.clone() for k, t in eng.slab.tensors.items()}
    rng_before = eng.rng_state().copy()
    n = 0
    for call in _bad_calls(eng, s):
        with pytest.raises(EngineInputError):
            call()
        n += 1
    assert n == 13
    for k, t in eng.slab.tensors.items():
        assert torch.equal(t, before[k]), k
    assert np.array_equal(eng.rng_state(), rng_before)


def test_discrete_actions_checked():
    eng = engine(act_space=DISC_ACT)
    s = eng.join(2)
    obs, _ = obs_actions(2, 1)
    eng.observe(s, obs[0], np.array([0, 4]))
    with pytest.raises(EngineInputError, match="outside"):
        eng.observe(s, obs[0], np.array([0, 5]))
    with pytest.raises(EngineInputError, match="integer"):
        eng.imagine(s, np.array([0.0, 1.0]))


def test_imagine_feeds_the_latent_observe_predicted():
    """imagine after observe equals the model's own observe -> imagine with the expected latent."""
    eng = engine()
    s = eng.join(2)
    obs, act = obs_actions(2, 2, seed=4)
    out = eng.observe(s, obs[0], act[0], np.ones(2, bool), decode=True)
    assert out.obs.shape == (2, 3) and out.z.shape == (2, 20)
    assert torch.equal(out.z.sum(-1).round(), torch.full((2,), 4.0)), "one class per latent variable"
    img = eng.imagine(s, act[1])
    model = eng.model
    with torch.no_grad():
        state, pred = model.observe(model.initial_state(2), torch.as_tensor(obs[0]), torch.as_tensor(act[0]),
                                    torch.ones(2, dtype=torch.bool))
        z = model.latent(pred.prior_logp)
        _, pred2 = model.imagine(state, z, torch.as_tensor(act[1]))
    torch.testing.assert_close(img.reward, pred2.reward.float())
    torch.testing.assert_close(img.cont, pred2.cont.float())


def test_sampling_is_seeded_and_rng_restorable():
    a, b = engine(sample=True, seed=5), engine(sample=True, seed=5)
    obs, act = obs_actions(4, 3)
    outs = []
    for e in (a, b):
        s = e.join(4)
        e.observe(s, obs[0], act[0], np.ones(4, bool))
        outs.append(e.imagine(s, act[1]).z)
    assert torch.equal(outs[0], outs[1])
    s = np.arange(4)
    st, data = a.rng_state(), a.snapshot(s)
    z1 = a.imagine(s, act[2]).z
    z2 = a.imagine(s, act[2]).z
    a.restore(data, s)
    a.set_rng_state(st)
    assert torch.equal(a.imagine(s, act[2]).z, z1)


class FakeGraphedStep:
    """CPU stand-in for kernels.graphs.GraphedStep: pads to the bucket with scratch rows."""

    def __init__(self, fn, bucket_sizes, scratch_slot):
        self.fn, self.sizes, self.scratch = fn, sorted(bucket_sizes), scratch_slot
        self.calls = []

    def __call__(self, slots, reset, *inputs):
        b = slots.shape[0]
        size = next(s for s in self.sizes if s >= b)
        self.calls.append(size)
        pad = size - b
        slots = torch.cat([slots, torch.full((pad,), self.scratch, dtype=slots.dtype)])
        reset = torch.cat([reset, torch.ones(pad, dtype=torch.bool)])
        inputs = [torch.cat([x, torch.zeros(pad, *x.shape[1:], dtype=x.dtype)]) for x in inputs]
        out = self.fn(slots, reset, *inputs)
        return tuple(t[:b] for t in out)


def test_graph_path_padding_matches_eager(monkeypatch):
    """The functions handed to GraphedStep give eager results and touch only real + scratch rows;
    decoding runs in its own graph; a batch above the largest bucket runs eagerly."""
    import worldssm.kernels.graphs as graphs

    made = []
    monkeypatch.setattr(graphs, "GraphedStep", lambda *a: made.append(FakeGraphedStep(*a)) or made[-1])
    # impl="torch": on CPU "auto" picks the numpy step, which never calls the graphed functions.
    eager = engine(impl="torch")
    padded = engine(impl="torch")
    padded.use_graphs = True
    padded.buckets = (4,)
    padded._build_steps()
    obs, act = obs_actions(6, 4, seed=6)
    for e in (eager, padded):
        e.join(8)
    s = np.array([5, 1, 6])
    for t in range(3):
        r = np.full(3, t == 0)
        x = eager.observe(s, obs[t, :3], act[t, :3], r) if t < 2 else eager.imagine(s, act[t, :3], decode=True)
        y = padded.observe(s, obs[t, :3], act[t, :3], r) if t < 2 else padded.imagine(s, act[t, :3], decode=True)
        torch.testing.assert_close(x.reward, y.reward)
    torch.testing.assert_close(x.obs, y.obs)
    six = np.array([0, 2, 3, 4, 5, 7])
    x, y = eager.observe(six, obs[3], act[3]), padded.observe(six, obs[3], act[3])  # above the bucket
    torch.testing.assert_close(x.reward, y.reward)
    # made: observe, imagine, observe + decode, imagine + decode
    assert [m.calls for m in made] == [[4, 4], [], [], [4]], "two observes and one decoding imagine, padded to 4"
    for k, t in eager.slab.tensors.items():
        torch.testing.assert_close(padded.slab.tensors[k][:8], t[:8])


@pytest.mark.parametrize("impl", ["numpy", "torch", "graphs"])
def test_latents_false_leaves_out_z_and_h_and_nothing_else(impl, monkeypatch):
    """observe / imagine with latents=False: z and h are None (under graphs they are not copied
    out), every other output and every state are what latents=True gives, also for 0 rows."""
    import worldssm.kernels.graphs as graphs

    monkeypatch.setattr(graphs, "GraphedStep", FakeGraphedStep)
    engines = []
    for _ in range(2):
        e = engine(impl="numpy" if impl == "numpy" else "torch")
        if impl == "graphs":
            e.use_graphs, e.buckets = True, (4,)
            e._build_steps()
        e.join(6)
        engines.append(e)
    full, light = engines
    obs, act = obs_actions(3, 3, seed=9)
    s = np.array([4, 0, 2])
    for t in range(3):
        r = np.full(3, t == 0)
        if t < 2:
            a, b = full.observe(s, obs[t], act[t], r, decode=t == 1), light.observe(s, obs[t], act[t], r, decode=t == 1,
                                                                                   latents=False)
        else:
            a, b = full.imagine(s, act[t], decode=True), light.imagine(s, act[t], decode=True, latents=False)
        assert a.z is not None and a.h is not None and b.z is None and b.h is None
        for name in ("reward", "cont", "log_cont") + (("obs",) if t else ()):
            assert torch.equal(getattr(a, name), getattr(b, name)), (t, name)
    for k, v in full.slab.tensors.items():
        assert torch.equal(light.slab.tensors[k], v), k
    none = light.imagine(np.zeros(0, np.int64), act[0][:0], latents=False)
    assert none.z is None and none.h is None and none.reward.shape == (0,)


def test_warm_steps_each_bucket_once_and_changes_no_agent(monkeypatch):
    """`warm` runs each requested verb once per bucket, at the smallest size that bucket serves,
    on slots it gives back; the agents' states and the free slots are as before."""
    import worldssm.kernels.graphs as graphs

    made = []
    monkeypatch.setattr(graphs, "GraphedStep", lambda *a: made.append(FakeGraphedStep(*a)) or made[-1])
    eng = engine(capacity=40, impl="torch")
    eng.use_graphs = True
    eng.buckets = (4, 16)
    eng._build_steps()
    obs, act = obs_actions(5, 1, seed=3)
    s = eng.join(5)
    eng.observe(s, obs[0], act[0], np.ones(5, bool))
    before, free = state_of(eng, s), eng.slab.num_free
    made_calls = [list(m.calls) for m in made]
    assert eng.warm([12, 3, 10, 30], verbs=("imagine",)) == [4, 16]  # 30 is above the largest bucket
    # made: observe, imagine, observe + decode, imagine + decode
    assert [m.calls[len(c):] for m, c in zip(made, made_calls)] == [[], [4, 16], [], []]
    assert eng.slab.num_free == free
    assert_states_equal(state_of(eng, s), before)
    assert eng.warm([2], verbs=("observe", "imagine")) == [4]
    with pytest.raises(EngineInputError, match="verbs"):
        eng.warm([2], verbs=("decode",))
    with pytest.raises(EngineInputError, match="free slots"):
        eng.warm([free + 1])
    assert engine(impl="torch").warm([3]) == []  # no graphs on this CPU engine: nothing to capture


@pytest.mark.parametrize("impl", ["numpy", "torch"])
@pytest.mark.parametrize("reset", [False, True])
def test_fork_observed_then_imagine_equals_observe(impl, reset):
    """imagine(forks, a) from fork_observed(slots, o) gives what observe(slots, o, a) gives, and
    leaves the agents' own states as they were."""
    from tests.engine.engine_helpers import debug_model, obs_actions

    eng = Engine(debug_model(), 16, impl=impl)
    slots = eng.join(3)
    obs, act = obs_actions(3, 4, seed=2)
    for t in range(3):
        eng.observe(slots, obs[t], act[t], np.full(3, t == 0))
    before = {k: v.clone() for k, v in eng.slab.tensors.items()}
    resets = np.array([reset, False, reset])
    forks = eng.fork_observed(slots, obs[3], n=2, resets=resets)
    assert forks.shape == (6,)
    from_forks = eng.imagine(forks, np.repeat(act[3], 2, axis=0))
    for k, v in before.items():
        assert torch.equal(eng.slab.tensors[k][slots], v[slots]), "the agents' own states are untouched"
    direct = eng.observe(slots, obs[3], act[3], resets)
    for field in ("reward", "cont", "z"):
        torch.testing.assert_close(getattr(from_forks, field)[::2], getattr(direct, field), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(getattr(from_forks, field)[1::2], getattr(direct, field), rtol=1e-5, atol=1e-6)
    eng.leave(forks)
    with pytest.raises(EngineInputError, match="slots are needed"):
        eng.fork_observed(slots, obs[3], n=5)
    assert eng.slab.num_owned == 3, "a refused fork takes nothing"


def test_state_dtype_stores_ssm_states_in_bfloat16_with_the_same_weights():
    """Engine(state_dtype="bfloat16") on a float32-configured model: the SSM rows are bfloat16
    (half the bytes), conv rows and latents stay float32, and the predictions track a float32
    state engine with the same weights closely but not bit for bit."""
    obs, act = obs_actions(4, 6, seed=3)
    ref, half = engine(), Engine(debug_model(), 16, state_dtype="bfloat16")
    assert half.impl == "torch"  # the numpy step reads float32 rows only
    for k, t in half.slab.tensors.items():
        assert t.dtype == (torch.bfloat16 if k.endswith(".ssm") else torch.float32), k
    assert half.model.cfg.backbone.state_dtype == "float32"  # the model itself is untouched
    ssm_values = sum(t[0].numel() for k, t in half.slab.tensors.items() if k.endswith(".ssm"))
    assert ref.slab.slot_nbytes - half.slab.slot_nbytes == 2 * ssm_values  # 4 -> 2 bytes per SSM value
    s_ref, s_half = ref.join(4), half.join(4)
    differ = False
    for t in range(6):
        a = ref.observe(s_ref, obs[t], act[t], decode=True) if t < 3 else ref.imagine(s_ref, act[t], decode=True)
        b = half.observe(s_half, obs[t], act[t], decode=True) if t < 3 else half.imagine(s_half, act[t], decode=True)
        torch.testing.assert_close(b.obs, a.obs, rtol=5e-2, atol=5e-2)
        torch.testing.assert_close(b.reward, a.reward, rtol=5e-2, atol=5e-2)
        differ |= not torch.equal(a.obs, b.obs)
    assert differ  # the states really were rounded


def test_state_dtype_bad_values_are_refused():
    with pytest.raises(ValueError, match="state_dtype must be None or one of"):
        Engine(debug_model(), 4, state_dtype="float16")
    import dataclasses

    from worldssm.model import WorldModel, preset
    from tests.engine.engine_helpers import BOX_ACT, VEC_OBS
    cfg = preset("DEBUG")
    gru = WorldModel(dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, kind="gru")), VEC_OBS, BOX_ACT)
    with pytest.raises(ValueError, match="stores Mamba-2 SSM states; this model's backbone is gru"):
        Engine(gru, 4, state_dtype="bfloat16")
    assert Engine(gru, 4, state_dtype="float32").slab.spec == Engine(gru, 4).slab.spec
