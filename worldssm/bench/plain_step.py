"""A plain-PyTorch Mamba-2 backbone step, written the way a user would without our kernels.

The baseline that ANCHORS.md measures ("Mamba-2, torch.compile + CUDA graph"): a dense batch
(no slot indirection), activations in the weight dtype, the SSM state in fp32, few ops per
layer. It reuses a `Mamba2Backbone`'s weights and computes the same function (a test checks it
against the reference step), so `torch.compile` + a CUDA graph of it is the fairest "what users
would pick instead" for the fused step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class PlainMamba2Step:
    """Dense-batch step over `bb`'s weights; state: per layer conv [B, K-1, Cd] and ssm [B, H, P, N] fp32."""

    def __init__(self, bb):
        self.bb = bb
        c = bb.cfg
        self.h, self.p, self.n, self.eps = c.n_heads, c.head_dim, c.d_state, c.norm_eps
        self.A = [(-torch.exp(m.A_log.detach().float())) for m in bb.mixers]  # precomputed once

    def initial_state(self, batch: int, device, dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        c = self.bb.cfg
        return [(torch.zeros(batch, c.d_conv - 1, c.conv_dim, device=device, dtype=dtype),
                 torch.zeros(batch, c.n_heads, c.head_dim, c.d_state, device=device)) for _ in range(c.n_layers)]

    def _rms(self, x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * w

    def step(self, state, x):
        """x [B, D] -> y [B, D]; updates `state` in place."""
        bb, h, p, n = self.bb, self.h, self.p, self.n
        b = x.shape[0]
        f = torch.float64 if x.dtype == torch.float64 else torch.float32  # arithmetic of the state update
        for i, mixer in enumerate(bb.mixers):
            conv, ssm = state[i]
            u = self._rms(x, bb.norms[i].weight)
            z, xbc, dt = torch.split(F.linear(u, mixer.in_proj.weight), [h * p, h * p + 2 * n, h], -1)
            window = torch.cat([conv, xbc[:, None]], 1)  # [B, K, Cd]
            conv.copy_(window[:, 1:])
            xbc = F.silu((window * mixer.conv_weight.t()).sum(1) + mixer.conv_bias)
            xs, Bm, Cm = torch.split(xbc, [h * p, n, n], -1)
            dt = F.softplus(dt.to(f) + mixer.dt_bias.to(f))  # [B, H]
            xf = xs.to(f).view(b, h, p)
            ssm.mul_(torch.exp(dt * self.A[i].to(f))[..., None, None])
            ssm.add_((dt[..., None] * xf)[..., None] * Bm.to(f)[:, None, None, :])
            y = torch.einsum("bhpn,bn->bhp", ssm, Cm.to(f)) + mixer.D.to(f)[:, None] * xf
            g = y * F.silu(z.to(f).view(b, h, p))
            g = g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + self.eps) * mixer.norm_weight.to(f).view(h, p)
            x = x + F.linear(g.reshape(b, h * p).to(x.dtype), mixer.out_proj.weight)
        return self._rms(x, bb.final_norm.weight)
