"""The SSD scan: `ref.ssd_scan_sequential` / `ref.ssd_scan_chunked` and the Triton chunked scan."""

from __future__ import annotations


def get_scan(impl: str):
    """The scan function for a resolved kernel choice.

    Args:
        impl: "reference" or "triton" (resolve "auto" first with `worldssm.kernels.resolve_impl`).

    Returns:
        A function `(x, dt, A, B, C, D, resets, initial_state, chunk_size=...) -> (y, final_state)`:
        the reference is `ssd_scan_chunked`, the Triton one `ssd_scan_triton` (autograd-capable;
        chunk_size a power of two >= 16). Their default chunk sizes differ (64 and 32): callers
        that want a given chunk pass it, as `mamba2_sequence_ref` does.

    Raises:
        worldssm.errors.MissingDependencyError: "triton" asked for and Triton cannot be imported.
    """
    if impl == "reference":
        from worldssm.kernels.scan.ref import ssd_scan_chunked

        return ssd_scan_chunked
    if impl == "triton":
        from worldssm.errors import require

        require("triton", "triton>=3.0")
        from worldssm.kernels.scan.triton import ssd_scan_triton

        return ssd_scan_triton
    raise ValueError(f"scan impl must be 'reference' or 'triton' (resolve 'auto' first), got {impl!r}")
