"""Programmatic dependent launch (PDL) for the step kernels: the device switch and the wait.

A kernel launched with `launch_pdl=True` may start while the kernel before it is still running.
It loads what that kernel does not write (weights, state tiles) first, then `pdl_wait`: wait for
the previous kernel to finish, then allow the next kernel to start. Because every kernel allows
its successor only after its own wait, a kernel that starts knows that every kernel before its
predecessor has finished.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def pdl_wait(PDL: tl.constexpr):
    if PDL:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


def pdl_enabled(device: torch.device) -> bool:
    """PDL on CUDA devices of compute capability 9.0 and up, unless WORLDSSM_PDL=0 (the bench's
    A/B switch). Never in the interpreter."""
    if device.type != "cuda" or os.environ.get("WORLDSSM_PDL", "1") == "0":
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


def launch_kwargs(device: torch.device) -> tuple[bool, dict]:
    """(the PDL constexpr, the extra launch keyword arguments) for a kernel on `device`."""
    pdl = pdl_enabled(device)
    return pdl, ({"launch_pdl": True} if pdl else {})
