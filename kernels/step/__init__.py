"""The Mamba-2 layer step: `ref.mamba2_step_ref` (specification) and the fused Triton kernel."""

from __future__ import annotations


def get_step(impl: str):
    """The step function for a resolved kernel choice.

    Args:
        impl: "reference" or "triton" (resolve "auto" first with `worldssm.kernels.resolve_impl`).

    Returns:
        A function with the signature of `mamba2_step_ref`.

    Raises:
        worldssm.errors.MissingDependencyError: "triton" asked for and Triton cannot be imported.
    """
    if impl == "reference":
        from worldssm.kernels.step.ref import mamba2_step_ref

        return mamba2_step_ref
    if impl == "triton":
        from worldssm.errors import require

        require("triton", "triton>=3.0")
        from worldssm.kernels.step.triton import mamba2_step_triton

        return mamba2_step_triton
    raise ValueError(f"step impl must be 'reference' or 'triton' (resolve 'auto' first), got {impl!r}")
