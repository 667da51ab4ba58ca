"""What every Triton kernel test module starts with: skip the module where Triton kernels cannot
run (no CUDA and no TRITON_INTERPRET=1, or no triton), else name the device they run on."""

import os

import pytest
import torch

CUDA = torch.cuda.is_available()


def require_triton() -> str:
    """Skip the calling module unless Triton kernels can run here; returns "cuda" or "cpu"."""
    if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no CUDA and TRITON_INTERPRET is not 1", allow_module_level=True)
    pytest.importorskip("triton")
    return "cuda" if CUDA else "cpu"
