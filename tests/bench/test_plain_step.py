"""The plain-PyTorch baseline of the step benchmark computes the same function as the model."""

import dataclasses

import torch

from worldssm.bench.plain_step import PlainMamba2Step
from worldssm.model import Mamba2Backbone, preset


def test_plain_step_equals_reference_backbone_step():
    torch.manual_seed(0)
    cfg = dataclasses.replace(preset("DEBUG").backbone, kernels="reference")
    bb = Mamba2Backbone(cfg).double()
    plain = PlainMamba2Step(bb)
    b = 5
    state = [(c.double(), s.double()) for c, s in plain.initial_state(b, "cpu", torch.float64)]
    ref_state = {k: v.double() for k, v in bb.initial_state(b).items()}
    reset = torch.zeros(b, dtype=torch.bool)
    for _ in range(4):
        x = torch.randn(b, cfg.d_model, dtype=torch.float64)
        ref_state, y_ref = bb.step(ref_state, x, reset)
        y = plain.step(state, x)
        torch.testing.assert_close(y, y_ref)
    for i, (conv, ssm) in enumerate(state):
        torch.testing.assert_close(conv, ref_state[f"{i}.conv"])
        torch.testing.assert_close(ssm, ref_state[f"{i}.ssm"])


def test_world_model_byte_bound_counts_weights_once_and_each_agent_state_twice():
    """The whole step's floor: all weights once; per agent its BASE state (555,008 bytes, the
    recorded slab size) read and written, 64 observation floats and an int64 action read, and
    1,024 log-probabilities, reward, continue, its logit and the 256-wide h written."""
    import dataclasses

    from worldssm.bench.step import world_model_byte_bound
    from worldssm.model import WorldModel
    from worldssm.model.config import preset_for

    cfg = preset_for("BASE", "mamba2")
    cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, kernels="reference"))
    wm = WorldModel(cfg, {"type": "box", "shape": [64], "dtype": "float32", "low": -1, "high": 1},
                    {"type": "discrete", "n": 8})
    n_params = sum(p.numel() for p in wm.parameters())
    one, three = (world_model_byte_bound(wm, b, 64, 1e12) for b in (1, 3))
    assert one["weight_bytes"] == 4 * n_params
    per_agent = 2 * 555_008 + 4 * 64 + 8 + 4 * (1024 + 3 + 256)
    assert three["bytes"] - one["bytes"] == 2 * per_agent
    assert one["bytes"] == 4 * n_params + per_agent
    assert abs(one["bound_us"] - one["bytes"] / 1e12 * 1e6) < 1e-9
