"""Depthwise causal convolution over time with a carried state and per-row resets.

The specification the fused kernels must match. A row's state is the last K-1 inputs it saw;
a reset at step t zeroes that state before step t, so no input from before t reaches t or later.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    state: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    activation: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal depthwise conv with SiLU.

    Args:
        x: inputs [B, T, C].
        weight: taps [C, K]; tap K-1 multiplies the current input, tap 0 the oldest.
        bias: [C] or None.
        state: the previous K-1 inputs [B, K-1, C] (oldest first); zeros when None.
        resets: bool [B, T]; True zeroes the row's state before that step.
        activation: apply SiLU to the output.

    Returns:
        (y [B, T, C], final_state [B, K-1, C]) in x's dtype.
    """
    b, t, c = x.shape
    k = weight.shape[1]
    if state is None:
        state = x.new_zeros(b, k - 1, c)
    xp = torch.cat([state.to(x.dtype), x], dim=1)  # [B, K-1+T, C]
    if resets is None:
        seg = torch.zeros(b, k - 1 + t, dtype=torch.long, device=x.device)
    else:
        seg = torch.cat(
            [torch.zeros(b, k - 1, dtype=torch.long, device=x.device), resets.long().cumsum(1)], dim=1
        )  # [B, K-1+T]: segment id of every position; the initial state is segment 0
    seg_now = seg[:, k - 1 :]  # [B, T]
    y = x.new_zeros(b, t, c) if bias is None else bias.to(x.dtype).expand(b, t, c).clone()
    for tap in range(k):
        valid = (seg[:, tap : tap + t] == seg_now).unsqueeze(-1)  # [B, T, 1]
        y = y + xp[:, tap : tap + t] * valid * weight[:, tap].to(x.dtype)
    final_valid = (seg[:, t:] == seg[:, -1:]).unsqueeze(-1)  # [B, K-1, 1]
    final_state = xp[:, t:] * final_valid  # [B, K-1, C]
    return (F.silu(y) if activation else y), final_state
