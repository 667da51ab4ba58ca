"""Kernel tests run the Triton kernels in the interpreter on CPU machines.

TRITON_INTERPRET must be set before any `@triton.jit` function is defined, i.e. before the
kernel modules are imported; on a CUDA machine the kernels compile for the GPU instead.
Importing torch does not import triton.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _nan_alloc(*shape, dtype, device):
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


@pytest.fixture
def poison(monkeypatch):
    """Every fresh Triton kernel output starts as NaN, so an element the kernel forgets fails."""
    import worldssm.kernels.mlp.triton as mlp_mod
    import worldssm.kernels.scan.triton as scan_mod
    import worldssm.kernels.step.layer as layer_mod
    import worldssm.kernels.step.norm as norm_mod
    import worldssm.kernels.step.split as split_mod
    import worldssm.kernels.step.triton as step_mod

    for mod in (step_mod, scan_mod, norm_mod, layer_mod, split_mod, mlp_mod):
        monkeypatch.setattr(mod, "_alloc", _nan_alloc)
