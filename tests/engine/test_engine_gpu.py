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
def test_cuda_bfloat16_conv_rows_lose_nothing_on_the_split_path(monkeypatch):
    """A bfloat16 backbone keeps its conv rows in bfloat16 (`Mamba2Backbone.state_spec`); above
    LAYER_MAX_BATCH agents (the split path: cuBLAS's bfloat16 in-projection rows) the step gives
    what float32 conv rows give, over observes with resets and imagines."""
    from worldssm.kernels.step.layer import LAYER_MAX_BATCH
    from worldssm.model.mamba2 import Mamba2Backbone

    torch.manual_seed(0)
    model = WorldModel(preset("BASE"), VEC_OBS, BOX_ACT)
    low = Engine(copy.deepcopy(model), 1100, device="cuda")
    spec = Mamba2Backbone.state_spec
    monkeypatch.setattr(Mamba2Backbone, "state_spec", lambda self, sd=None: {
        k: (shape, torch.float32 if k.endswith(".conv") else dt) for k, (shape, dt) in spec(self, sd).items()})
    wide = Engine(model, 1100, device="cuda")
    assert low.slab.tensors["0.conv"].dtype == torch.bfloat16 and wide.slab.tensors["0.conv"].dtype == torch.float32
    n = LAYER_MAX_BATCH + 60
    slots = low.join(n)
    assert (wide.join(n) == slots).all()
    obs, act = obs_actions(n, 6, seed=5)
    rng = np.random.default_rng(1)
    for t in range(6):
        r = rng.random(n) < (1.0 if t == 0 else 0.1)
        a = low.observe(slots, obs[t], act[t], r, decode=True) if t < 3 else low.imagine(slots, act[t], decode=True)
        b = wide.observe(slots, obs[t], act[t], r, decode=True) if t < 3 else wide.imagine(slots, act[t], decode=True)
        for name in ("reward", "cont", "obs", "z"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=1e-6)
    for k, v in wide.slab.tensors.items():
        torch.testing.assert_close(low.slab.tensors[k][:n].float(), v[:n].float(), rtol=0, atol=1e-6)


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_calls_in_flight_see_their_own_inputs():
    """Inputs reach the GPU through a few page-locked buffers by asynchronous copies. Twelve
    calls queued without a wait (more than there are buffers) must give what the same calls
    give one at a time: a buffer refilled before its copy was read would mix their inputs."""
    from worldssm.engine import engine as engine_mod

    assert engine_mod._INPUT_BUFFERS < 12
    torch.manual_seed(0)
    model = WorldModel(preset("DEBUG"), VEC_OBS, BOX_ACT)
    queued, waited = Engine(copy.deepcopy(model), 64, device="cuda"), Engine(model, 64, device="cuda")
    slots = queued.join(40)
    assert (waited.join(40) == slots).all()
    obs, act = obs_actions(40, 12, seed=5)
    resets = np.random.default_rng(1).random((12, 40)) < 0.2
    outs = []
    for t in range(12):
        if t % 3 == 0:
            outs.append(queued.observe(slots, obs[t], act[t], resets[t], decode=True))
        else:
            outs.append(queued.imagine(slots, act[t], decode=True))
    for t in range(12):
        if t % 3 == 0:
            want = waited.observe(slots, obs[t], act[t], resets[t], decode=True)
        else:
            want = waited.imagine(slots, act[t], decode=True)
        torch.cuda.synchronize()
        for name in ("reward", "log_cont", "obs", "z"):
            torch.testing.assert_close(getattr(outs[t], name), getattr(want, name), rtol=0, atol=0,
                                       msg=lambda m, t=t, name=name: f"call {t}, {name}: {m}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_planner_sums_on_the_gpu_match_its_host_sums():
    """On CUDA the planner keeps its discounted sums on the GPU and reads them once a candidate
    set; the same engine seen as a CPU one sums on the host after every step. Same plans."""
    from worldssm.agents.planners import MPPIPlanner, PlannerConfig

    class OnTheHost:
        """The engine, reporting a CPU device: the planner then sums on the host."""
        device = torch.device("cpu")

        def __init__(self, engine):
            self._engine = engine

        def __getattr__(self, name):
            return getattr(self._engine, name)

    torch.manual_seed(0)
    engine = Engine(WorldModel(preset("DEBUG"), VEC_OBS, BOX_ACT), 512, device="cuda")
    cfg = PlannerConfig(samples=32, horizon=6, iterations=2, elites=4)
    slots = engine.join(4)
    obs, _ = obs_actions(4, 1, seed=6)
    first = np.ones(4, bool)
    on_gpu = MPPIPlanner(engine, cfg, seed=0).plan(slots, obs[0], first, np.arange(4), tick=0)
    on_host = MPPIPlanner(OnTheHost(engine), cfg, seed=0).plan(slots, obs[0], first, np.arange(4), tick=0)
    assert engine.slab.num_free == 512 - 4  # every fork was given back
    np.testing.assert_allclose(on_gpu, on_host, rtol=1e-5, atol=1e-5)
    assert np.ptp(on_gpu) > 0  # the agents' plans differ: not a constant both paths return


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_warm_captures_the_graphs_before_the_calls_that_replay_them(monkeypatch):
    """After `warm`, calls of the warmed sizes replay graphs captured then: none captures again,
    and their results equal those of an engine that captured on first use."""
    from worldssm.kernels.graphs import GraphedStep

    captured = []
    real = GraphedStep.capture
    monkeypatch.setattr(GraphedStep, "capture", lambda self, size, ex: captured.append(size) or real(self, size, ex))
    torch.manual_seed(0)
    model = WorldModel(preset("DEBUG"), VEC_OBS, BOX_ACT)
    warmed, cold = Engine(copy.deepcopy(model), 64, device="cuda"), Engine(model, 64, device="cuda")
    assert warmed.warm([5, 40], verbs=("imagine",)) == [8, 64]
    assert captured == [8, 64]
    obs, act = obs_actions(40, 2, seed=7)
    outs = {}
    for name, eng in (("warmed", warmed), ("cold", cold)):
        s = eng.join(40)
        eng.observe(s, obs[0], act[0], np.ones(40, bool))
        outs[name] = [eng.imagine(s[:5], act[1][:5]), eng.imagine(s, act[1])]
    assert captured == [8, 64, 64, 64, 8, 64], "warmed: one observe capture; cold: observe and both imagines"
    for a, b in zip(outs["warmed"], outs["cold"]):
        torch.testing.assert_close(a.reward, b.reward, rtol=0, atol=0)
