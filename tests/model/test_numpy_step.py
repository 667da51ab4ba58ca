"""The engine's numpy step against its PyTorch path: same predictions, same states."""

import dataclasses

import numpy as np
import pytest
import torch

from tests.engine.engine_helpers import BOX_ACT, DISC_ACT, debug_model, obs_actions
from worldssm.engine import Engine
from worldssm.model import WorldModel, preset
from worldssm.model.numpy_step import supports

TOL = dict(rtol=1e-4, atol=1e-5)


def _pair(model, capacity=32):
    return Engine(model, capacity, impl="torch"), Engine(model, capacity, impl="numpy")


@pytest.mark.parametrize("act_space", [BOX_ACT, DISC_ACT], ids=["box", "discrete"])
def test_numpy_step_matches_torch(act_space):
    model = debug_model(act_space=act_space)
    ref, fast = _pair(model)
    assert (ref.impl, fast.impl) == ("torch", "numpy")
    s_ref, s_fast = ref.join(6), fast.join(6)
    obs, act = obs_actions(6, 12, seed=3, act_space=act_space)
    for t in range(12):
        resets = np.zeros(6, bool)
        resets[t % 6] = t >= 6  # a reset row's old state must not leak into the step
        got = fast.observe(s_fast, obs[t], act[t], resets, decode=True)
        want = ref.observe(s_ref, obs[t], act[t], resets, decode=True)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, **TOL)
        rows = [4, 1]  # a subset, out of order
        got = fast.imagine(s_fast[rows], act[t][rows], decode=True)
        want = ref.imagine(s_ref[rows], act[t][rows], decode=True)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, **TOL)
    for k in ref.slab.tensors:
        torch.testing.assert_close(fast.slab.tensors[k][s_fast], ref.slab.tensors[k][s_ref], **TOL)


def test_numpy_step_leaves_other_slots_and_reset_rows_clean():
    model = debug_model()
    eng = Engine(model, 16, impl="numpy")
    s = eng.join(4)
    obs, act = obs_actions(4, 3)
    eng.observe(s, obs[0], act[0])
    eng.slab.tensors["0.ssm"][s[2]] = float("nan")  # a reset row's state is never read
    before = {k: v[s[3]].clone() for k, v in eng.slab.tensors.items()}
    out = eng.observe(s[:3], obs[1][:3], act[1][:3], np.array([False, False, True]))
    assert torch.isfinite(out.reward).all() and torch.isfinite(eng.slab.tensors["0.ssm"][s[2]]).all()
    for k, v in before.items():
        assert torch.equal(eng.slab.tensors[k][s[3]], v), k
    fresh = Engine(model, 16, impl="numpy")
    f = fresh.join(1)
    want = fresh.observe(f, obs[1][2:3], act[1][2:3], np.array([True]))
    torch.testing.assert_close(out.reward[2:], want.reward, **TOL)
    torch.testing.assert_close(out.z[2:], want.z, **TOL)


def test_numpy_step_follows_in_place_weight_updates():
    model = debug_model(act_space=DISC_ACT)
    eng = Engine(model, 8, impl="numpy")
    s = eng.join(3)
    obs, act = obs_actions(3, 1, act_space=DISC_ACT)
    before = eng.observe(s, obs[0], act[0], np.ones(3, bool)).reward.clone()
    with torch.no_grad():
        model.reward_head[-1].bias[20] += 2.0  # reward is zero-initialised: this moves it
        model.backbone.mixers[0].A_log.mul_(0.5)
    ref = Engine(model, 8, impl="torch")
    r = ref.join(3)
    got = eng.observe(s, obs[0], act[0], np.ones(3, bool)).reward
    want = ref.observe(r, obs[0], act[0], np.ones(3, bool)).reward
    assert not torch.allclose(got, before)
    torch.testing.assert_close(got, want, **TOL)


def test_which_models_the_numpy_step_runs():
    model = debug_model()
    cpu = torch.device("cpu")
    assert supports(model, False, cpu) is None
    assert Engine(model, 4).impl == "numpy"
    assert "sampled" in supports(model, True, cpu)
    assert Engine(model, 4, sample=True).impl == "torch"
    with pytest.raises(ValueError, match="impl='numpy' cannot run this engine: latents are sampled"):
        Engine(model, 4, sample=True, impl="numpy")
    assert "bfloat16 states" in supports(debug_model(state_dtype="bfloat16"), False, cpu)
    cfg = preset("DEBUG")
    gru = WorldModel(dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, kind="gru")),
                     model.obs_space, model.action_space)
    assert "gru" in supports(gru, False, cpu)
    image = {"type": "box", "shape": [16, 16, 3], "dtype": "uint8", "low": 0, "high": 255}
    assert "image" in supports(WorldModel(cfg, image, BOX_ACT), False, cpu)
    assert "cuda" in supports(model, False, torch.device("cuda"))
    with pytest.raises(ValueError, match="impl must be one of"):
        Engine(model, 4, impl="fast")


def test_numpy_step_with_matrix_observations_and_unbounded_actions():
    obs_space = {"type": "box", "shape": [2, 3], "dtype": "float32",
                 "low": np.full((2, 3), -np.inf, np.float32), "high": np.full((2, 3), np.inf, np.float32)}
    act_space = {"type": "box", "shape": [2], "dtype": "float32",  # one bounded dim, one not
                 "low": np.array([-1.0, -np.inf], np.float32), "high": np.array([1.0, np.inf], np.float32)}
    torch.manual_seed(1)
    model = WorldModel(preset("DEBUG"), obs_space, act_space).eval()
    ref, fast = _pair(model)
    s_ref, s_fast = ref.join(5), fast.join(5)
    rng = np.random.default_rng(0)
    for t in range(4):
        obs = (rng.standard_normal((5, 2, 3)) * 3).astype(np.float32)
        act = (rng.standard_normal((5, 2)) * 4).astype(np.float32)  # outside the bounded dim's range too
        got = fast.observe(s_fast, obs, act, np.full(5, t == 0), decode=True)
        want = ref.observe(s_ref, obs, act, np.full(5, t == 0), decode=True)
        assert got.obs.shape == (5, 2, 3)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, **TOL)


def test_numpy_step_writes_the_grown_slab():
    model = debug_model()
    fast, ref = Engine(model, 4, impl="numpy"), Engine(model, 4, impl="torch")
    obs, act = obs_actions(3, 3)
    s_fast, s_ref = fast.join(3), ref.join(3)
    fast.observe(s_fast, obs[0], act[0], np.ones(3, bool))
    ref.observe(s_ref, obs[0], act[0], np.ones(3, bool))
    fast.grow(10)  # new slab tensors: the numpy step must follow them
    more = fast.join(5)
    assert fast.capacity == 10 and more.size == 5
    got = fast.observe(s_fast, obs[1], act[1])
    want = ref.observe(s_ref, obs[1], act[1])
    torch.testing.assert_close(got.reward, want.reward, **TOL)
    for k in ref.slab.tensors:
        torch.testing.assert_close(fast.slab.tensors[k][s_fast], ref.slab.tensors[k][s_ref], **TOL)
