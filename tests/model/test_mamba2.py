"""Mamba2Backbone dispatches through get_scan / get_step, and its chunk size reaches the scan."""

import dataclasses

import pytest
import torch

import worldssm.kernels.scan.ref as scan_ref
import worldssm.kernels.step.ref as step_ref
from worldssm.model import Mamba2Backbone, preset

from tests.model.wm_helpers import record_chunk_sizes


@pytest.mark.parametrize("chunk", [16, 64])
def test_forward_scans_with_the_configured_chunk(monkeypatch, chunk):
    seen = record_chunk_sizes(monkeypatch, scan_ref, "ssd_scan_chunked")
    cfg = dataclasses.replace(preset("DEBUG").backbone, kernels="reference", chunk_size=chunk)
    torch.manual_seed(0)
    bb = Mamba2Backbone(cfg)
    with torch.no_grad():
        y, _ = bb(torch.randn(2, 40, cfg.d_model))
    assert seen == [chunk] * cfg.n_layers
    assert torch.isfinite(y).all()


def test_step_slots_uses_get_step(monkeypatch):
    real = step_ref.mamba2_step_ref
    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(step_ref, "mamba2_step_ref", spy)
    cfg = dataclasses.replace(preset("DEBUG").backbone, kernels="reference")
    bb = Mamba2Backbone(cfg)
    slab = bb.initial_state(3)
    with torch.no_grad():
        bb.step_slots(slab, torch.tensor([2, 0]), torch.randn(2, cfg.d_model), torch.zeros(2, dtype=torch.bool))
    assert len(calls) == cfg.n_layers
