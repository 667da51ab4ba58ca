"""The Mamba-2 (SSD) recurrence: the sequential specification and a chunked PyTorch version.

Per row b, head h, time t (scalar decay per head, one group of B and C shared by all heads):

    if reset[t]:  S = 0
    S  = exp(dt[t] * A) * S + dt[t] * x[t] (outer) B[t]      # S [P, N]
    y[t] = S @ C[t] + D * x[t]                               # y [P]

`dt` is already positive (softplus applied by the caller). Arithmetic runs in float32, or in
float64 when the inputs are float64. See kernels/scan/README.md for the chunked derivation.
"""

from __future__ import annotations

import torch


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def ssd_scan_sequential(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The obvious loop over time: the specification.

    Args:
        x: [B, T, H, P].
        dt: positive step sizes [B, T, H].
        A: negative decay rates [H].
        B: input projections [B, T, N].
        C: output projections [B, T, N].
        D: skip weights [H] or None.
        resets: bool [B, T]; True zeroes the row's state before that step.
        initial_state: [B, H, P, N] or None (zeros).

    Returns:
        (y [B, T, H, P] in x's dtype, final_state [B, H, P, N] in the compute dtype).
    """
    cdt = _compute_dtype(x, dt, B, C)
    b, t, h, p = x.shape
    n = B.shape[-1]
    xf, dtf, Bf, Cf, Af = x.to(cdt), dt.to(cdt), B.to(cdt), C.to(cdt), A.to(cdt)
    state = x.new_zeros(b, h, p, n, dtype=cdt) if initial_state is None else initial_state.to(cdt)
    ys = []
    for i in range(t):
        if resets is not None:
            state = torch.where(resets[:, i, None, None, None], 0.0, state)
        decay = torch.exp(dtf[:, i] * Af)  # [B, H]
        inp = (dtf[:, i, :, None] * xf[:, i])[..., None] * Bf[:, i, None, None, :]  # [B, H, P, N]
        state = state * decay[..., None, None] + inp
        y = torch.einsum("bhpn,bn->bhp", state, Cf[:, i])  # [B, H, P]
        if D is not None:
            y = y + D.to(cdt)[:, None] * xf[:, i]
        ys.append(y)
    y = torch.stack(ys, dim=1) if ys else xf.new_zeros(b, 0, h, p)
    return y.to(x.dtype), state


def ssd_scan_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    resets: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD: quadratic inside chunks of `chunk_size`, recurrent across them.

    Same arguments and results as `ssd_scan_sequential`; equal to it up to rounding.
    """
    cdt = _compute_dtype(x, dt, B, C)
    b, t, h, p = x.shape
    n = B.shape[-1]
    L = int(chunk_size)
    if L < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    pad = (-t) % L
    if resets is None:
        resets = torch.zeros(b, t, dtype=torch.bool, device=x.device)
    xf, dtf, Bf, Cf = x.to(cdt), dt.to(cdt), B.to(cdt), C.to(cdt)
    if pad:
        # Padding steps have dt = 0: decay 1 and no input, so the final state is unchanged.
        xf = torch.nn.functional.pad(xf, (0, 0, 0, 0, 0, pad))
        dtf = torch.nn.functional.pad(dtf, (0, 0, 0, pad))
        Bf = torch.nn.functional.pad(Bf, (0, 0, 0, pad))
        Cf = torch.nn.functional.pad(Cf, (0, 0, 0, pad))
        resets = torch.nn.functional.pad(resets, (0, pad))
    nc = (t + pad) // L
    xc = xf.view(b, nc, L, h, p)
    dtc = dtf.view(b, nc, L, h)
    Bc = Bf.view(b, nc, L, n)
    Cc = Cf.view(b, nc, L, n)
    seg = resets.view(b, nc, L).long().cumsum(-1)  # [B, c, L]: 0 = still the chunk's incoming segment
    acum = torch.cumsum(dtc * A.to(cdt), dim=2)  # [B, c, L, H] log-decay from chunk start

    # Intra-chunk: y[l] += sum_{s<=l, same segment} C[l].B[s] exp(acum[l]-acum[s]) dt[s] x[s]
    same = seg[..., :, None] == seg[..., None, :]  # [B, c, L, S]
    causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
    mask = (same & causal)[:, :, None]  # [B, c, 1, L, S]
    diff = acum.permute(0, 1, 3, 2)[..., :, None] - acum.permute(0, 1, 3, 2)[..., None, :]  # [B,c,H,L,S]
    decay = torch.exp(diff.masked_fill(~mask, float("-inf")))  # [B, c, H, L, S]
    cb = torch.einsum("bcln,bcsn->bcls", Cc, Bc)  # [B, c, L, S]
    xdt = xc * dtc[..., None]  # [B, c, L, H, P]
    y = torch.einsum("bcls,bchls,bcshp->bclhp", cb, decay, xdt)

    # Each chunk's own contribution to its final state, and how much of the incoming state survives.
    last = seg[..., -1:]  # [B, c, 1]
    to_end = torch.exp(acum[:, :, -1:, :] - acum) * (seg == last)[..., None]  # [B, c, L, H]
    chunk_states = torch.einsum("bclh,bclhp,bcln->bchpn", to_end, xdt, Bc)  # [B, c, H, P, N]
    keep = torch.exp(acum[:, :, -1, :]) * (last[..., 0] == 0)[..., None]  # [B, c, H]

    state = x.new_zeros(b, h, p, n, dtype=cdt) if initial_state is None else initial_state.to(cdt)
    incoming = []
    for c in range(nc):
        incoming.append(state)
        state = state * keep[:, c, :, None, None] + chunk_states[:, c]
    incoming_states = torch.stack(incoming, dim=1)  # [B, c, H, P, N]

    # Inter-chunk: the incoming state, decayed to step l, read out by C[l] while no reset has happened.
    from_start = torch.exp(acum) * (seg == 0)[..., None]  # [B, c, L, H]
    y = y + torch.einsum("bcln,bchpn,bclh->bclhp", Cc, incoming_states, from_start)
    if D is not None:
        y = y + D.to(cdt)[:, None] * xc
    y = y.reshape(b, nc * L, h, p)[:, :t]
    return y.to(x.dtype), state
