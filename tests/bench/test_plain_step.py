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
