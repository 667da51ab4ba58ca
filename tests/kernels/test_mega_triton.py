"""The one-launch backbone step (`kernels/step/mega.py`) against the layer path and the reference.

CPU: the Triton interpreter, one launch per layer (programs run in program order, so a test there
cannot show a race); GPU: the whole stack in one launch.
"""

import dataclasses

import pytest
import torch

from tests.kernels.triton_here import require_triton

DEV = require_triton()

from worldssm.kernels.step import mega  # noqa: E402
from worldssm.kernels.step.triton import _COUNTERS  # noqa: E402
from worldssm.model import preset  # noqa: E402
from worldssm.model.mamba2 import Mamba2Backbone  # noqa: E402

pytestmark = pytest.mark.usefixtures("poison")


def backbone(dtype=torch.float32, seed=0, **over):
    cfg = dataclasses.replace(preset("DEBUG").backbone, kernels="triton", **over)
    torch.manual_seed(seed)
    bb = Mamba2Backbone(cfg)
    with torch.no_grad():
        for m in bb.mixers:
            m.D.uniform_(0.5, 1.5)
            m.conv_bias.normal_(0, 0.3)
            m.norm_weight.uniform_(0.5, 1.5)
        for norm in bb.norms:
            norm.weight.uniform_(0.5, 1.5)
    return bb.to(DEV, dtype)


def random_slab(bb, s, ssm_dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, *shape, generator=g).to(DEV, ssm_dtype if k.endswith("ssm") else dt)
            for k, (shape, dt) in bb.state_spec().items()}


def set_kernels(bb, impl):
    for m in bb.modules():
        if hasattr(getattr(m, "cfg", None), "kernels"):
            m.cfg = dataclasses.replace(m.cfg, kernels=impl)


def counters_zero():
    return all(int(buf.abs().sum()) == 0 for (_, owner), bufs in _COUNTERS.items() if owner == "mega" for buf in bufs)


def run_path(monkeypatch, path, bb, slab, slots, x, reset):
    monkeypatch.setenv("WORLDSSM_STEP_PATH", path)
    with torch.no_grad():
        return bb.residual_fused(slab, slots, x, reset)


@pytest.mark.parametrize("b", [1, 5, 16])
def test_one_launch_equals_the_layer_path_and_leaves_other_slots_alone(monkeypatch, b):
    bb = backbone()
    s = b + 9
    slab_l, slab_m = random_slab(bb, s), random_slab(bb, s)
    g = torch.Generator().manual_seed(b)
    slots = torch.randperm(s, generator=g)[:b].to(DEV)
    for t in range(3):
        x = torch.randn(b, bb.cfg.d_model, generator=g).to(DEV)
        reset = (torch.rand(b, generator=g) < 0.3).to(DEV)
        want = run_path(monkeypatch, "layer", bb, slab_l, slots, x, reset)
        x_before = x.clone()
        got = run_path(monkeypatch, "mega", bb, slab_m, slots, x, reset)
        assert torch.equal(x, x_before), "the input residual was written"
        assert not torch.isnan(got).any(), "an unwritten output element"
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        for k in slab_l:
            torch.testing.assert_close(slab_m[k], slab_l[k], rtol=1e-5, atol=1e-5)
        assert counters_zero(), "the flags were not left at zero for the next launch"
    others = torch.ones(s, dtype=torch.bool)
    others[slots.cpu()] = False
    fresh = random_slab(bb, s)
    for k in slab_m:
        assert torch.equal(slab_m[k][others.to(DEV)], fresh[k][others.to(DEV)]), k


def test_matches_the_reference_backbone_over_steps(monkeypatch):
    bb = backbone(seed=2, n_layers=3)
    slab_t, slab_r = random_slab(bb, 11), random_slab(bb, 11)
    slots = torch.tensor([4, 0, 9, 2, 7, 10, 1], device=DEV)
    g = torch.Generator().manual_seed(3)
    monkeypatch.setenv("WORLDSSM_STEP_PATH", "mega")
    with torch.no_grad():
        for t in range(4):
            x = torch.randn(7, bb.cfg.d_model, generator=g).to(DEV)
            reset = torch.tensor([t == 1, False, t == 3, False, False, t == 0, False], device=DEV)
            got = bb.step_slots(slab_t, slots, x, reset)
            set_kernels(bb, "reference")
            want = bb.step_slots(slab_r, slots, x, reset)
            set_kernels(bb, "triton")
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for k in slab_t:
        torch.testing.assert_close(slab_t[k], slab_r[k], rtol=1e-4, atol=1e-4)


def test_reset_rows_read_no_state(monkeypatch):
    bb = backbone(seed=4)
    slab = random_slab(bb, 4)
    for k in slab:
        slab[k][1] = float("nan")  # a reset row's old state must never be read
    slots, reset = torch.tensor([1, 3], device=DEV), torch.tensor([True, False], device=DEV)
    x = torch.randn(2, bb.cfg.d_model, device=DEV)
    got = run_path(monkeypatch, "mega", bb, slab, slots, x, reset)
    assert torch.isfinite(got).all()
    assert all(torch.isfinite(slab[k][1]).all() for k in slab)


@pytest.mark.parametrize("ssm_dtype", [torch.float32, torch.bfloat16])
def test_bf16_stream_and_states(monkeypatch, ssm_dtype):
    bb = backbone(dtype=torch.bfloat16, seed=5)
    slab_l, slab_m = random_slab(bb, 12, ssm_dtype), random_slab(bb, 12, ssm_dtype)
    slots = torch.tensor([3, 0, 11, 7, 5], device=DEV)
    g = torch.Generator().manual_seed(0)
    for t in range(3):
        x = torch.randn(5, bb.cfg.d_model, generator=g).to(DEV, torch.bfloat16)
        reset = torch.tensor([t == 2, False, False, t == 0, False], device=DEV)
        want = run_path(monkeypatch, "layer", bb, slab_l, slots, x, reset)
        got = run_path(monkeypatch, "mega", bb, slab_m, slots, x, reset)
        assert got.dtype == torch.bfloat16
        # On a GPU the two paths' bf16 dots tile differently; in the interpreter both are float32.
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)
    for k in slab_l:
        torch.testing.assert_close(slab_m[k].float(), slab_l[k].float(), rtol=2e-2, atol=2e-2)


def test_the_path_by_batch(monkeypatch):
    from worldssm.kernels.step.layer import MEGA_MAX_BATCH, backbone_path

    monkeypatch.setenv("WORLDSSM_STEP_PATH", "mega")
    assert backbone_path(1) == "mega" and backbone_path(MEGA_MAX_BATCH) == "mega"
    assert backbone_path(MEGA_MAX_BATCH + 1) == "layer"
    programs, s, ng, t = mega.mega_grid(1, 8, 64, 64, 256)  # BASE at one agent
    assert (s, ng, t) == (2, 1, 8) and programs == 18
    assert mega.mega_grid(16, 8, 64, 64, 256)[0] == 2 + 8 * 4 + 8


def test_bad_input_names_what_is_wrong(monkeypatch):
    bb = backbone()
    slab = random_slab(bb, 4)

    def layers(**change):
        return [ly._replace(**change) if i == 1 else ly for i, ly in enumerate(bb.mega_layers(slab))]

    c = bb.cfg
    x = torch.randn(2, c.d_model, device=DEV)
    slots, reset = torch.tensor([0, 2], device=DEV), torch.zeros(2, dtype=torch.bool, device=DEV)
    before = {k: v.clone() for k, v in slab.items()}
    with pytest.raises(ValueError, match="layer 1: out_weight must be"):
        mega.mamba2_backbone_step_mega(x, layers(out_weight=torch.zeros(3, 3, device=DEV)), slots, reset,
                                       c.n_heads, c.head_dim, c.d_state)
    with pytest.raises(ValueError, match="layer 1: ssm_state must be"):
        mega.mamba2_backbone_step_mega(x, layers(ssm_state=torch.zeros(4, 1, 2, 3, device=DEV)), slots, reset,
                                       c.n_heads, c.head_dim, c.d_state)
    with pytest.raises(ValueError, match="slots and reset must be"):
        mega.mamba2_backbone_step_mega(x, layers(), slots[:1], reset, c.n_heads, c.head_dim, c.d_state)
    with pytest.raises(ValueError, match="head_dim >= 8"):
        mega.mamba2_backbone_step_mega(x, layers(), slots, reset, c.n_heads, 4, c.d_state)
    for k in slab:
        assert torch.equal(slab[k], before[k]), "a rejected call changed a state"


@pytest.mark.parametrize("b,d_conv,head_dim", [(36, 3, 12), (20, 2, 8)])
def test_several_row_blocks_odd_head_dims_and_short_convs(monkeypatch, b, d_conv, head_dim):
    """Called directly (past MEGA_MAX_BATCH: 2 and 3 row blocks of 16), a head_dim that is not a
    power of two, conv widths 2 and 3, and padded rows sharing one scratch slot with reset set (as
    `GraphedStep` pads a bucket)."""
    bb = backbone(seed=6, d_conv=d_conv, head_dim=head_dim)
    s = b + 5
    slab_l, slab_m = random_slab(bb, s), random_slab(bb, s)
    g = torch.Generator().manual_seed(7)
    slots = torch.randperm(s - 1, generator=g)[:b]
    slots[-3:] = s - 1  # three padded rows on the scratch slot
    slots = slots.to(DEV)
    c = bb.cfg
    for t in range(2):
        x = torch.randn(b, c.d_model, generator=g).to(DEV)
        reset = (torch.rand(b, generator=g) < 0.2).to(DEV)
        reset[-3:] = True
        want = run_path(monkeypatch, "layer", bb, slab_l, slots, x, reset)
        with torch.no_grad():
            got = mega.mamba2_backbone_step_mega(x, bb.mega_layers(slab_m), slots, reset, c.n_heads, c.head_dim, c.d_state,
                                                 eps=c.norm_eps, norm_eps=c.norm_eps)
        torch.testing.assert_close(got[:-3], want[:-3], rtol=1e-5, atol=1e-5)
        for k in slab_l:
            torch.testing.assert_close(slab_m[k][:-1], slab_l[k][:-1], rtol=1e-5, atol=1e-5)
        assert counters_zero()


def test_a_grid_that_does_not_fit_takes_the_layer_path(monkeypatch):
    bb = backbone(seed=8)
    slab_l, slab_m = random_slab(bb, 6), random_slab(bb, 6)
    slots, reset = torch.tensor([5, 1, 2], device=DEV), torch.zeros(3, dtype=torch.bool, device=DEV)
    x = torch.randn(3, bb.cfg.d_model, device=DEV)
    called = []
    monkeypatch.setattr(mega, "mega_fits", lambda *a: False)
    monkeypatch.setattr(mega, "mamba2_backbone_step_mega", lambda *a, **k: called.append(1))
    got = run_path(monkeypatch, "mega", bb, slab_m, slots, x, reset)
    want = run_path(monkeypatch, "layer", bb, slab_l, slots, x, reset)
    assert not called
    torch.testing.assert_close(got, want, rtol=0, atol=0)
