"""Kernels for the Mamba-2 world model: pure-PyTorch references and fused Triton versions.

Each op lives in its own folder: `ref.py` is the specification (the obvious loop, fp32), the
Triton kernel beside it must agree with it (tests/kernels). `resolve_impl` picks the path:
"auto" means Triton on CUDA and the reference elsewhere; asking for "triton" where it cannot run
is an error, never a silent fallback.
"""

from __future__ import annotations

import contextlib

KERNEL_IMPLS = ("auto", "reference", "triton")


def resolve_impl(impl: str, device_type: str) -> str:
    """Map a configured kernel choice to the path that will run.

    Args:
        impl: "auto", "reference" or "triton".
        device_type: torch device type of the tensors, e.g. "cuda" or "cpu".

    Returns:
        "reference" or "triton".

    Raises:
        ValueError: unknown impl.
        worldssm.errors.MissingDependencyError: triton requested but not importable.
        RuntimeError: triton requested for CPU tensors without TRITON_INTERPRET=1.
    """
    import os

    if impl not in KERNEL_IMPLS:
        raise ValueError(f"kernel impl must be one of {KERNEL_IMPLS}, got {impl!r}")
    if impl == "auto":
        impl = "triton" if device_type == "cuda" else "reference"
    if impl == "triton":
        from worldssm.errors import require

        require("triton", "triton>=3.0")
        if device_type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                "the triton kernels need CUDA tensors (or TRITON_INTERPRET=1 to run them "
                f"in the interpreter); got {device_type} tensors. Use kernels='reference' on CPU."
            )
    return impl


def serving_tf32() -> bool:
    """Whether the serving step's float32 matrix products (the encoder, heads and decoder around
    the bf16 backbone) may round their inputs to TF32 on the tensor cores: WORLDSSM_TF32=1 (the
    default) or 0 (IEEE float32 throughout). Training is not affected (it autocasts to bf16)."""
    import os

    v = os.environ.get("WORLDSSM_TF32", "1")
    if v not in ("0", "1"):
        raise ValueError(f"WORLDSSM_TF32 must be 0 or 1, got {v!r}")
    return v == "1"


@contextlib.contextmanager
def tf32_matmuls(device):
    """Within this block torch's float32 matmuls on CUDA may use TF32 when `serving_tf32()` says
    so (a CUDA graph captured inside keeps the kernels chosen there); the previous setting is
    restored on exit. Elsewhere (CPU, WORLDSSM_TF32=0) it changes nothing."""
    import torch

    if torch.device(device).type != "cuda" or not serving_tf32():
        yield
        return
    flag = torch.backends.cuda.matmul
    before, flag.allow_tf32 = flag.allow_tf32, True
    try:
        yield
    finally:
        flag.allow_tf32 = before
