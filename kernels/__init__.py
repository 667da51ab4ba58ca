"""Kernels for the Mamba-2 world model: pure-PyTorch references and fused Triton versions.

Each op lives in its own folder: `ref.py` is the specification (the obvious loop, fp32), the
Triton kernel beside it must agree with it (tests/kernels). `resolve_impl` picks the path:
"auto" means Triton on CUDA and the reference elsewhere; asking for "triton" where it cannot run
is an error, never a silent fallback.
"""

from __future__ import annotations

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
