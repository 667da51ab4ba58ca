"""The fused layer step (norm + in-projection + conv, state update, out-projection + residual)
against the reference layer: RMSNorm, `Mamba2Mixer.step_slots` on the reference kernels, residual add.

Small odd shapes run everywhere (CPU: Triton interpreter); batch sizes cross every tile choice.
"""

import dataclasses

import pytest
import torch

from tests.kernels.triton_here import require_triton

DEV = require_triton()

import worldssm.kernels.step.layer as layer_mod  # noqa: E402
from worldssm.kernels.step.layer import mamba2_layer_step_triton  # noqa: E402
from worldssm.model import preset  # noqa: E402
from worldssm.model.mamba2 import Mamba2Mixer, RMSNorm  # noqa: E402

pytestmark = pytest.mark.usefixtures("poison")


def layer(d_conv=4, dtype=torch.float32, seed=0, **over):
    cfg = dataclasses.replace(preset("DEBUG").backbone, d_conv=d_conv, kernels="reference", **over)
    torch.manual_seed(seed)
    norm, mixer = RMSNorm(cfg.d_model, cfg.norm_eps), Mamba2Mixer(cfg)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        mixer.D.uniform_(0.5, 1.5)
        mixer.conv_bias.normal_(0, 0.3)
        mixer.norm_weight.uniform_(0.5, 1.5)
    return cfg, norm.to(DEV, dtype), mixer.to(DEV, dtype)


def slab(cfg, s, ssm_dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    conv = torch.randn(s, cfg.d_conv - 1, cfg.conv_dim, generator=g).to(DEV)
    ssm = torch.randn(s, cfg.n_heads, cfg.head_dim, cfg.d_state, generator=g).to(DEV, ssm_dtype)
    return conv, ssm


def fused(norm, mixer, res, conv, ssm, slots, reset):
    kw = mixer._kernel_args()
    kw["gate_norm_weight"] = kw.pop("norm_weight")
    return mamba2_layer_step_triton(res, norm.weight, mixer.in_proj.weight, conv, ssm, slots, reset,
                                    out_weight=mixer.out_proj.weight, norm_eps=norm.eps, **kw)


# Every tile tier of `layer._tiles`: 1 and 5 rows the first, 23 the second; the last two cases
# lower the tiers' bounds so that 40 rows take the third tier and then the fourth (two row blocks
# of 32, the second partial) instead of running 300 rows in the interpreter.
@pytest.mark.parametrize("b,d_conv,tiers", [(1, 4, None), (5, 2, None), (23, 3, None), (40, 3, (4, 8, 64)),
                                            (40, 4, (4, 8, 16))])
def test_layer_matches_reference_and_leaves_other_slots_alone(b, d_conv, tiers, monkeypatch):
    if tiers is not None:
        monkeypatch.setattr(layer_mod, "TILE_ROWS", tiers)
    cfg, norm, mixer = layer(d_conv)
    s = b + 7
    conv_r, ssm_r = slab(cfg, s)
    conv_t, ssm_t = conv_r.clone(), ssm_r.clone()
    g = torch.Generator().manual_seed(b)
    slots = torch.randperm(s, generator=g)[:b].to(DEV)
    others = torch.ones(s, dtype=torch.bool)
    others[slots.cpu()] = False
    with torch.no_grad():
        for t in range(3):
            res = torch.randn(b, cfg.d_model, generator=g).to(DEV)
            reset = (torch.rand(b, generator=g) < 0.3).to(DEV)
            want = res + mixer.step_slots(norm(res), conv_r, ssm_r, slots, reset)
            got = fused(norm, mixer, res, conv_t, ssm_t, slots, reset)
            assert not torch.isnan(got).any(), "an unwritten output element"
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(conv_t, conv_r, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ssm_t, ssm_r, rtol=1e-4, atol=1e-4)
    others = others.to(DEV)
    fresh_conv, fresh_ssm = slab(cfg, s)
    assert torch.equal(conv_t[others], fresh_conv[others]) and torch.equal(ssm_t[others], fresh_ssm[others])


def test_reset_rows_read_no_state():
    cfg, norm, mixer = layer()
    conv, ssm = slab(cfg, 4)
    conv[1], ssm[1] = float("nan"), float("nan")  # a reset row's old state must never be read
    slots, reset = torch.tensor([1, 3], device=DEV), torch.tensor([True, False], device=DEV)
    res = torch.randn(2, cfg.d_model, device=DEV)
    with torch.no_grad():
        got = fused(norm, mixer, res, conv, ssm, slots, reset)
        fresh = torch.zeros_like(conv[:1]), torch.zeros_like(ssm[:1])
        want = res[:1] + mixer.step_slots(norm(res[:1]), *fresh, torch.tensor([0], device=DEV),
                                          torch.tensor([False], device=DEV))
    assert torch.isfinite(got).all() and torch.isfinite(conv[1]).all() and torch.isfinite(ssm[1]).all()
    torch.testing.assert_close(got[:1], want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ssm[1:2], fresh[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ssm_dtype", [torch.float32, torch.bfloat16])
def test_bf16_weights_and_stream(ssm_dtype):
    cfg, norm, mixer = layer(dtype=torch.bfloat16, seed=3)
    conv_r, ssm_r = slab(cfg, 12, ssm_dtype)
    conv_t, ssm_t = conv_r.clone(), ssm_r.clone()
    slots = torch.tensor([3, 0, 11, 7, 5], device=DEV)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in range(4):
            res = torch.randn(5, cfg.d_model, generator=g).to(DEV, torch.bfloat16)
            reset = torch.tensor([t == 2, False, False, t == 0, False], device=DEV)
            want = res + mixer.step_slots(norm(res), conv_r, ssm_r, slots, reset)
            got = fused(norm, mixer, res, conv_t, ssm_t, slots, reset)
            assert got.dtype == torch.bfloat16
            torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(ssm_t.float(), ssm_r.float(), rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(conv_t, conv_r, rtol=3e-2, atol=3e-2)


def test_bad_shapes_name_what_is_wrong():
    cfg, norm, mixer = layer()
    conv, ssm = slab(cfg, 4)
    res = torch.randn(2, cfg.d_model, device=DEV)
    slots, reset = torch.tensor([0, 1], device=DEV), torch.zeros(2, dtype=torch.bool, device=DEV)
    with torch.no_grad():
        with pytest.raises(ValueError, match="ssm_state must be"):
            fused(norm, mixer, res, conv, ssm[:, :1], slots, reset)
        with pytest.raises(ValueError, match="slots and reset"):
            fused(norm, mixer, res, conv, ssm, slots[:1], reset)
        with pytest.raises(ValueError, match="res must be"):
            fused(norm, mixer, res[:, ::2], conv, ssm, slots, reset)
