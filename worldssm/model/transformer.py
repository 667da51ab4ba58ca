"""Transformer backbone with a KV cache: one module, two modes.

Pre-norm decoder blocks (RMSNorm -> causal multi-head self-attention with rotary positions ->
residual; RMSNorm -> SiLU MLP -> residual) and a final RMSNorm, behind the interface of
`Mamba2Backbone`: `forward(x, state, resets)` attends over a whole [B, T, D] sequence for
training, `step_slots` advances rows of a preallocated slab by one step for serving, and T steps
equal one forward over T.

Attention sees a sliding window of the last C = `context` steps of the agent's own episode, the
current step included. Positions count steps since the episode start: a reset restarts them at 0
and hides every step before it.

State per agent: for every layer a ring buffer of the window's keys and values, `{i}.k` and
`{i}.v` [C, H, P] float32 (keys stored already rotated), and one `pos` int64 [], the number of
steps since the episode start (the position of the next step). The step at position p is
written at ring slot p % C, so once it is written the slots holding steps of the current episode
are exactly j <= p (all of them once p >= C): validity is one comparison, with no per-entry flag.
Unlike Mamba-2's, this state grows linearly with C.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldssm.model.config import BackboneConfig
from worldssm.model.mamba2 import RMSNorm, State
from worldssm.model.nets import upcast

ROPE_BASE = 10000.0  # rotary frequencies are ROPE_BASE ** (-2i / P), i < P / 2


def rope_tables(pos: torch.Tensor, head_dim: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [..., P/2] in `dtype` of the rotary angles of positions `pos` int64 [...].

    The angles are formed in float64: positions count whole episodes, and pos * frequency in
    float32 loses a visible fraction of a radian past about 10^5 steps.
    """
    inv_freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float64) / head_dim)
    angle = pos.to(torch.float64)[..., None] * inv_freq  # [..., P/2]
    return angle.cos().to(dtype), angle.sin().to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., H, P] by its position (halves paired, as GPT-NeoX); cos, sin [..., P/2]."""
    x1, x2 = x.chunk(2, -1)  # [..., H, P/2] each
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # [..., 1, P/2]: shared by the heads
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


def sequence_layout(pos0: torch.Tensor, resets: torch.Tensor, context: int, cached: bool):
    """Positions and attention mask of a training sequence.

    Args:
        pos0: int64 [B], the position of step 0 if it continues the episode carried in.
        resets: bool [B, T]; True starts a new episode at that step.
        context: window C.
        cached: whether keys of the carried ring buffer come first (then the mask has C + T columns).

    Returns:
        pos: int64 [B, T], each step's position in its episode.
        mask: bool [B, T, C + T] (or [B, T, T]): query t sees ring slot j (the first C columns)
            or step s. Step s is seen when it is in t's episode, s <= t and t - s < C; ring slot
            j, holding the step of age a_j = (pos0 - 1 - j) mod C before step 0, is seen when no
            reset came in [0, t], j < pos0 (the slot was written in this episode) and t + 1 + a_j < C.
    """
    b, t = resets.shape
    steps = torch.arange(t, device=resets.device)  # [T]
    last_reset = torch.where(resets, steps, -1).cummax(1).values  # [B, T]: -1 where none so far
    carried = last_reset < 0  # [B, T]: still the episode carried in
    pos = torch.where(carried, pos0[:, None] + steps, steps - last_reset)  # [B, T]
    lag = steps[:, None] - steps[None, :]  # [T, T]: t - s
    same = last_reset[:, :, None] == last_reset[:, None, :]  # [B, T, T]
    mask = same & (lag >= 0) & (lag < context)  # [B, T, T]
    if not cached:
        return pos, mask
    slot = torch.arange(context, device=resets.device)  # [C]
    age = torch.remainder(pos0[:, None] - 1 - slot, context)  # [B, C]
    written = slot < pos0[:, None]  # [B, C]
    in_window = steps[None, :, None] + 1 + age[:, None, :] < context  # [B, T, C]
    ring = carried[:, :, None] & written[:, None, :] & in_window  # [B, T, C]
    return pos, torch.cat([ring, mask], -1)


def ring_after(ring: torch.Tensor, new: torch.Tensor, pos: torch.Tensor, context: int) -> torch.Tensor:
    """The ring buffer after steps 0..T-1 wrote `new` at slots pos % C, each slot keeping its last write.

    Args:
        ring: [B, C, H, P] before the sequence.
        new: [B, T, H, P] this sequence's keys or values.
        pos: int64 [B, T] their positions.
    """
    b, t = pos.shape
    steps = torch.arange(t, device=pos.device)  # [T]
    hit = (pos % context)[:, :, None] == torch.arange(context, device=pos.device)  # [B, T, C]
    last = torch.where(hit, steps[:, None], -1).amax(1)  # [B, C]: last step writing slot j, -1 if none
    rows = torch.arange(b, device=pos.device)[:, None]  # [B, 1]
    taken = new[rows, last.clamp(min=0)]  # [B, C, H, P]
    return torch.where((last >= 0)[..., None, None], taken, ring.to(new.dtype))


class TransformerBlock(nn.Module):
    """One pre-norm decoder block: attention and MLP, each behind an RMSNorm and a residual."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        d, hp = cfg.d_model, cfg.n_heads * cfg.head_dim
        self.attn_norm = RMSNorm(d, cfg.norm_eps)
        self.qkv = nn.Linear(d, 3 * hp, bias=False)
        self.out_proj = nn.Linear(hp, d, bias=False)
        self.mlp_norm = RMSNorm(d, cfg.norm_eps)
        self.mlp_in = nn.Linear(d, cfg.mlp_ratio * d, bias=False)
        self.mlp_out = nn.Linear(cfg.mlp_ratio * d, d, bias=False)

    def qkv_rotated(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x [..., D] -> q, k (both rotated), v, each [..., H, P]."""
        h, p = self.cfg.n_heads, self.cfg.head_dim
        q, k, v = self.qkv(self.attn_norm(x)).unflatten(-1, (3, h, p)).unbind(-3)
        return rotate(q, cos, sin), rotate(k, cos, sin), v

    def finish(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """x [..., D] and its attention output [..., H, P] -> the block's output [..., D]."""
        x = x + self.out_proj(attn.flatten(-2))
        return x + self.mlp_out(F.silu(self.mlp_in(self.mlp_norm(x))))


class TransformerBackbone(nn.Module):
    """Causal Transformer over a sliding window of `cfg.context` steps, with a KV-cache state."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)

    def state_spec(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Per-agent state tensors: name -> (shape without the batch dim, dtype)."""
        c = self.cfg
        spec: dict[str, tuple[tuple[int, ...], torch.dtype]] = {"pos": ((), torch.int64)}
        for i in range(c.n_layers):
            spec[f"{i}.k"] = ((c.context, c.n_heads, c.head_dim), torch.float32)
            spec[f"{i}.v"] = ((c.context, c.n_heads, c.head_dim), torch.float32)
        return spec

    def initial_state(self, batch: int, device=None) -> State:
        device = device if device is not None else self.final_norm.weight.device
        return {k: torch.zeros(batch, *s, dtype=d, device=device) for k, (s, d) in self.state_spec().items()}

    def forward(self, x, state: State | None = None, resets=None):
        """x [B, T, D] -> (y [B, T, D], final state). A reset starts a new episode at that step.

        With `state`, the steps before the first reset continue the carried episode and may
        attend its ring buffer; its slots that no query may see are never read (they may hold
        NaN). Without it, attention runs over the T steps alone and the ring starts at zeros.
        """
        b, t, _ = x.shape
        c, hp = self.cfg.context, (self.cfg.n_heads, self.cfg.head_dim)
        resets = torch.zeros(b, t, dtype=torch.bool, device=x.device) if resets is None else resets
        pos0 = torch.zeros(b, dtype=torch.int64, device=x.device) if state is None else state["pos"]
        pos, mask = sequence_layout(pos0, resets, c, cached=state is not None)  # [B, T], [B, T, (C +) T]
        seen = None if state is None else mask[:, :, :c].any(1)[..., None, None]  # [B, C, 1, 1]
        cos, sin = rope_tables(pos, self.cfg.head_dim, x.dtype)  # [B, T, P/2]
        new_state = {"pos": pos[:, -1] + 1}
        for i, blk in enumerate(self.blocks):
            q, k, v = blk.qkv_rotated(x, cos, sin)  # [B, T, H, P]
            if state is None:
                ring_k = ring_v = x.new_zeros(b, c, *hp)  # [B, C, H, P]
                keys, vals = k, v  # [B, T, H, P]
            else:
                ring_k, ring_v = state[f"{i}.k"], state[f"{i}.v"]  # [B, C, H, P]
                # torch.where, not a multiply: a slot no query sees is never read, even if NaN.
                keys = torch.cat([torch.where(seen, ring_k.to(x.dtype), 0.0), k], 1)  # [B, C + T, H, P]
                vals = torch.cat([torch.where(seen, ring_v.to(x.dtype), 0.0), v], 1)
            attn = F.scaled_dot_product_attention(
                q.transpose(1, 2), keys.transpose(1, 2), vals.transpose(1, 2), attn_mask=mask[:, None],
            )  # [B, H, T, P]
            x = blk.finish(x, attn.transpose(1, 2))
            new_state[f"{i}.k"] = upcast(ring_after(ring_k, k, pos, c))
            new_state[f"{i}.v"] = upcast(ring_after(ring_v, v, pos, c))
        return self.final_norm(x), new_state

    def step_slots(self, slab: State, slots, x, reset):
        """Advance rows `slots` of `slab` in place. x [B, D], reset bool [B] -> y [B, D].

        Writes one ring slot per layer and `pos` of each row in `slots`, nothing else. No host
        sync and no data-dependent shape, so a CUDA graph can capture it.
        """
        c = self.cfg.context
        pos = torch.where(reset, 0, slab["pos"][slots])  # [B]: position of this step
        ring = pos % c  # [B]: the slot this step is written to
        slot = torch.arange(c, device=x.device)  # [C]
        here = (slot == ring[:, None])[..., None, None]  # [B, C, 1, 1]
        # After this write the slots of the current episode are j <= pos (see the module docstring).
        valid = slot <= pos[:, None]  # [B, C]
        cos, sin = rope_tables(pos, self.cfg.head_dim, x.dtype)  # [B, P/2]
        for i, blk in enumerate(self.blocks):
            q, k, v = blk.qkv_rotated(x, cos, sin)  # [B, H, P]
            keys = self._window(slab[f"{i}.k"][slots], k, here, valid)  # [B, C, H, P]
            vals = self._window(slab[f"{i}.v"][slots], v, here, valid)
            attn = F.scaled_dot_product_attention(
                q[:, :, None], keys.transpose(1, 2), vals.transpose(1, 2), attn_mask=valid[:, None, None],
            )  # [B, H, 1, P]
            slab[f"{i}.k"][slots, ring] = k.to(slab[f"{i}.k"].dtype)
            slab[f"{i}.v"][slots, ring] = v.to(slab[f"{i}.v"].dtype)
            x = blk.finish(x, attn[:, :, 0])
        slab["pos"][slots] = pos + 1
        return self.final_norm(x)

    @staticmethod
    def _window(cache: torch.Tensor, new: torch.Tensor, here: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The ring [B, C, H, P] with `new` [B, H, P] at `here` and zeros outside `valid` [B, C]."""
        # torch.where rather than a multiply: a slot from before a reset is never read, even if NaN.
        old = torch.where(valid[..., None, None], cache.to(new.dtype), 0.0)  # [B, C, H, P]
        return torch.where(here, new[:, None], old)

    def step(self, state: State, x, reset):
        """Functional step: (state, x [B, D], reset [B]) -> (new state, y [B, D]); `state` is not modified."""
        new_state = {k: v.clone() for k, v in state.items()}
        y = self.step_slots(new_state, torch.arange(x.shape[0], device=x.device), x, reset)
        return new_state, y
