"""On CUDA the engine's graphed kernel path agrees with the eager reference path (run on the GPU machine)."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from tests.engine.engine_helpers import BOX_ACT, VEC_OBS, obs_actions
from worldssm.engine.engine import Engine
from worldssm.model import WorldModel, preset

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("preset_name", ["DEBUG", "BASE"])
def test_graphed_kernel_engine_matches_reference(preset_name, monkeypatch):
    torch.backends.cuda.matmul.allow_tf32 = False
    monkeypatch.setenv("WORLDSSM_TF32", "0")  # IEEE products on both sides (the default rounds to TF32)
    cfg = preset(preset_name)
    torch.manual_seed(0)
    fast_model = WorldModel(cfg, VEC_OBS, BOX_ACT)
    ref_model = copy.deepcopy(fast_model)
    ref_model.backbone.apply(lambda m: setattr(m, "cfg", dataclasses.replace(m.cfg, kernels="reference"))
                             if hasattr(m, "cfg") else None)
    fast = Engine(fast_model, 96, device="cuda", precision="float32")
    ref = Engine(ref_model, 96, device="cuda", graphs="off", precision="float32")
    assert fast.use_graphs and not ref.use_graphs
    slots = fast.join(40)
    assert (ref.join(40) == slots).all()
    obs, act = obs_actions(40, 8, seed=3)
    rng = np.random.default_rng(0)
    for t in range(8):
        pick = np.sort(rng.choice(40, size=int(rng.integers(1, 40)), replace=False))
        resets = rng.random(len(pick)) < 0.2
        if t < 5:
            a = fast.observe(slots[pick], obs[t][pick], act[t][pick], resets)
            b = ref.observe(slots[pick], obs[t][pick], act[t][pick], resets)
        else:
            a = fast.imagine(slots[pick], act[t][pick])
            b = ref.imagine(slots[pick], act[t][pick])
        torch.testing.assert_close(a.reward, b.reward, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(a.cont, b.cont, rtol=1e-3, atol=1e-3)
    # Row `capacity` is the scratch slot that padded graph rows write to: not an agent's state.
    for k, v in fast.slab.tensors.items():
        torch.testing.assert_close(v[:96].float(), ref.slab.tensors[k][:96].float(), rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_engine_defaults_to_a_bfloat16_backbone_that_tracks_float32():
    torch.manual_seed(0)
    model = WorldModel(preset("BASE"), VEC_OBS, BOX_ACT)
    low = Engine(copy.deepcopy(model), 64, device="cuda")
    ref = Engine(model, 64, device="cuda", precision="float32")
    assert low.precision == "bfloat16" and low.model.backbone.final_norm.weight.dtype == torch.bfloat16
    slots = low.join(40)
    assert (ref.join(40) == slots).all()
    obs, act = obs_actions(40, 8, seed=3)
    for t in range(8):
        a = low.observe(slots, obs[t], act[t], np.full(40, t == 0)) if t < 5 else low.imagine(slots, act[t])
        b = ref.observe(slots, obs[t], act[t], np.full(40, t == 0)) if t < 5 else ref.imagine(slots, act[t])
        torch.testing.assert_close(a.reward, b.reward, rtol=0.05, atol=0.05)
        torch.testing.assert_close(a.cont, b.cont, rtol=0.05, atol=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_engine_with_bfloat16_states_tracks_float32_states():
    """The graphed Triton step with bfloat16 SSM rows: the slab holds bfloat16, and rewards,
    continues and decoded observations stay close to float32 rows with the same weights."""
    torch.manual_seed(0)
    model = WorldModel(preset("BASE"), VEC_OBS, BOX_ACT)
    half = Engine(copy.deepcopy(model), 64, device="cuda", state_dtype="bfloat16")
    ref = Engine(model, 64, device="cuda")
    assert half.use_graphs and half.slab.tensors["0.ssm"].dtype == torch.bfloat16
    slots = half.join(40)
    assert (ref.join(40) == slots).all()
    obs, act = obs_actions(40, 12, seed=4)
    for t in range(12):
        if t < 5:
            a = half.observe(slots, obs[t], act[t], np.full(40, t == 0), decode=True)
            b = ref.observe(slots, obs[t], act[t], np.full(40, t == 0), decode=True)
        else:
            a, b = half.imagine(slots, act[t], decode=True), ref.imagine(slots, act[t], decode=True)
        torch.testing.assert_close(a.reward, b.reward, rtol=0.05, atol=0.05)
        torch.testing.assert_close(a.cont, b.cont, rtol=0.05, atol=0.05)
        torch.testing.assert_close(a.obs, b.obs, rtol=0.05, atol=0.05)
    ssm_h, ssm_r = half.slab.tensors["3.ssm"][:40].float(), ref.slab.tensors["3.ssm"][:40]
    torch.testing.assert_close(ssm_h, ssm_r, rtol=0.05, atol=0.05)
