"""Mamba-2 blocks and the backbone stack: one module, two modes.

`forward(x, state, resets)` runs the chunked scan over [B, T, D] for training; `step(state, x,
reset)` advances one token for serving; T steps equal one forward over T. Per layer and agent the
recurrent state is `conv [K-1, H*P + 2N]` (the weights' dtype) and `ssm [H, P, N]` (float32 or
bfloat16), whatever the agent's age. `step_slots` advances rows of a preallocated slab in place, addressed
by slot indices: the engine's path.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from worldssm.kernels import resolve_impl
from worldssm.kernels.scan import get_scan
from worldssm.kernels.step import get_step
from worldssm.kernels.step.ref import mamba2_sequence_ref
from worldssm.model.config import BackboneConfig
from worldssm.model.nets import upcast

State = dict[str, torch.Tensor]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        w = self.weight
        if y.dtype != x.dtype:  # (.to to the same dtype is a no-op: skipped, nothing changes)
            y = y.to(x.dtype)
        if w.dtype != x.dtype:
            w = w.to(x.dtype)
        return y * w


class Mamba2Mixer(nn.Module):
    """One Mamba-2 mixer: in-projection, conv, SSD, gated per-head RMSNorm, out-projection."""

    def __init__(self, cfg: BackboneConfig, layer_idx: int = 0):
        super().__init__()
        self.cfg = cfg
        h, p, n, k = cfg.n_heads, cfg.head_dim, cfg.d_state, cfg.d_conv
        self.in_proj = nn.Linear(cfg.d_model, 2 * h * p + 2 * n + h, bias=False)
        self.conv_weight = nn.Parameter(torch.empty(cfg.conv_dim, k).uniform_(-1, 1) / math.sqrt(k))
        self.conv_bias = nn.Parameter(torch.zeros(cfg.conv_dim))
        # dt initialised so softplus(dt_bias) is log-uniform in [1e-3, 1e-1] (Mamba's default).
        dt = torch.exp(torch.rand(h) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(h).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(h))
        self.norm_weight = nn.Parameter(torch.ones(h * p))
        self.out_proj = nn.Linear(h * p, cfg.d_model, bias=False)
        self._A_cache: tuple[int, torch.Tensor] | None = None

    def A(self) -> torch.Tensor:
        """-exp(A_log) in float32 [H]; cached between steps while A_log is unchanged."""
        if torch.is_grad_enabled() and self.A_log.requires_grad:
            return -torch.exp(self.A_log.float())
        version = self.A_log._version
        cached = self._A_cache
        if cached is None or cached[0] != version or cached[1].device != self.A_log.device:
            cached = (version, -torch.exp(self.A_log.detach().float()))
            self._A_cache = cached
        return cached[1]

    def _kernel_args(self) -> dict:
        cfg = self.cfg
        return dict(
            conv_weight=self.conv_weight, conv_bias=self.conv_bias, dt_bias=self.dt_bias, A=self.A(),
            D=self.D, norm_weight=self.norm_weight, n_heads=cfg.n_heads, head_dim=cfg.head_dim,
            d_state=cfg.d_state, eps=cfg.norm_eps,
        )

    def forward(self, u, conv_state=None, ssm_state=None, resets=None):
        """u [B, T, D] -> (y [B, T, D], conv [B, K-1, Cd] float32, ssm [B, H, P, N] float32)."""
        impl = resolve_impl(self.cfg.kernels, u.device.type)
        zxbcdt = self.in_proj(u)  # [B, T, 2*H*P + 2N + H]
        y, conv_f, ssm_f = mamba2_sequence_ref(
            zxbcdt, conv_state, ssm_state, resets, chunk_size=self.cfg.chunk_size,
            scan=get_scan(impl), **self._kernel_args(),
        )
        return self.out_proj(y.to(u.dtype)), upcast(conv_f), upcast(ssm_f)

    def step_slots(self, u, conv_slab, ssm_slab, slots, reset):
        """u [B, D]; advances slab rows `slots` in place; returns y [B, D]."""
        impl = resolve_impl(self.cfg.kernels, u.device.type)
        zxbcdt = F.linear(u, self.in_proj.weight)  # = self.in_proj(u) [B, 2*H*P + 2N + H]
        y = get_step(impl)(zxbcdt, conv_slab, ssm_slab, slots, reset, **self._kernel_args())
        return F.linear(y, self.out_proj.weight)  # = self.out_proj(y)


class Mamba2Backbone(nn.Module):
    """Residual pre-norm stack of Mamba-2 mixers with a final RMSNorm."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        self.norms = nn.ModuleList(RMSNorm(cfg.d_model, cfg.norm_eps) for _ in range(cfg.n_layers))
        self.mixers = nn.ModuleList(Mamba2Mixer(cfg, i) for i in range(cfg.n_layers))
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)

    def state_spec(self, state_dtype: str | None = None) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Per-agent state tensors: name -> (shape without the batch dim, dtype). `state_dtype`
        ("float32" or "bfloat16") overrides the config's storage of the SSM states; the step
        kernels follow the dtype of the tensors they are given.

        The conv state holds the last K-1 in-projection outputs (x, B, C) as they were computed:
        in bfloat16 where the weights are bfloat16 (a serving engine's backbone), so it is stored
        in the weights' dtype and nothing is lost on the module and split paths (cuBLAS gives
        bfloat16 rows); the layer and one-launch paths round their float32 rows to bfloat16 as
        they store them. That halves the bytes of its read and write at every step."""
        c = self.cfg
        sd = c.state_dtype if state_dtype is None else state_dtype
        if sd not in ("float32", "bfloat16"):
            raise ValueError(f"state_dtype must be 'float32' or 'bfloat16', got {sd!r}")
        ssm_dtype = torch.bfloat16 if sd == "bfloat16" else torch.float32
        conv_dtype = torch.bfloat16 if self.mixers[0].in_proj.weight.dtype == torch.bfloat16 else torch.float32
        spec = {}
        for i in range(c.n_layers):
            spec[f"{i}.conv"] = ((c.d_conv - 1, c.conv_dim), conv_dtype)
            spec[f"{i}.ssm"] = ((c.n_heads, c.head_dim, c.d_state), ssm_dtype)
        return spec

    def initial_state(self, batch: int, device=None) -> State:
        device = device if device is not None else self.final_norm.weight.device
        return {k: torch.zeros(batch, *shape, dtype=dt, device=device) for k, (shape, dt) in self.state_spec().items()}

    def forward(self, x, state: State | None = None, resets=None):
        """x [B, T, D] -> (y [B, T, D], final state). A reset zeroes that row's state before the step."""
        new_state = {}
        for i, (norm, mixer) in enumerate(zip(self.norms, self.mixers)):
            conv = None if state is None else state[f"{i}.conv"]
            ssm = None if state is None else state[f"{i}.ssm"]
            y, conv_f, ssm_f = mixer(norm(x), conv, ssm, resets)
            x = x + y
            new_state[f"{i}.conv"] = conv_f
            bf16 = self.cfg.state_dtype == "bfloat16"
            new_state[f"{i}.ssm"] = ssm_f.to(torch.bfloat16) if bf16 else ssm_f
        return self.final_norm(x), new_state

    def step_slots(self, slab: State, slots, x, reset):
        """Advance rows `slots` of `slab` in place. x [B, D], reset bool [B] -> y [B, D]."""
        if resolve_impl(self.cfg.kernels, x.device.type) == "triton":
            return self._step_slots_fused(slab, slots, x, reset)
        for i, (norm, mixer) in enumerate(zip(self.norms, self.mixers)):
            x = x + mixer.step_slots(norm.forward(x), slab[f"{i}.conv"], slab[f"{i}.ssm"], slots, reset)
        return self.final_norm.forward(x)

    def _step_slots_fused(self, slab: State, slots, x, reset):
        """The kernel path for this batch (`kernels/step/layer.py: backbone_path`): "layer",
        `residual_fused` then the final norm (13 launches at BASE); "v1", per layer add+RMSNorm,
        cuBLAS in-projection, the conv+state kernel, cuBLAS out-projection (17); "split", the same
        with the step in two launches and no row counter (`kernels/step/split.py`, 21)."""
        from worldssm.kernels.step.layer import backbone_path
        from worldssm.kernels.step.norm import add_rmsnorm_triton

        path = backbone_path(x.shape[0])
        if path in ("v1", "split"):
            return self._cublas_stack(slab, slots, x, reset, path)[1]
        return add_rmsnorm_triton(self.residual_fused(slab, slots, x, reset), None, self.final_norm.weight,
                                  self.cfg.norm_eps)[1]

    def _cublas_stack(self, slab: State, slots, x, reset, path: str):
        """The "v1" and "split" paths (`path`): per layer add+RMSNorm, cuBLAS in-projection, the
        path's step kernel(s), cuBLAS out-projection. Returns (the residual after the last layer,
        the final norm of it)."""
        import torch.nn.functional as F

        from worldssm.kernels.step.norm import add_rmsnorm_triton
        from worldssm.kernels.step.split import mamba2_step_split
        from worldssm.kernels.step.triton import mamba2_step_triton

        eps = self.cfg.norm_eps
        step = mamba2_step_split if path == "split" else mamba2_step_triton
        res, h = add_rmsnorm_triton(x, None, self.norms[0].weight, eps)
        for i, mixer in enumerate(self.mixers):
            zxbcdt = F.linear(h, mixer.in_proj.weight)  # [B, 2*H*P + 2N + H]
            y = step(zxbcdt, slab[f"{i}.conv"], slab[f"{i}.ssm"], slots, reset, **mixer._kernel_args())
            weight = self.norms[i + 1].weight if i + 1 < len(self.norms) else self.final_norm.weight
            res, h = add_rmsnorm_triton(res, F.linear(y, mixer.out_proj.weight), weight, eps)
        return res, h

    def residual_fused(self, slab: State, slots, x, reset):
        """The residual stream after the last layer, before the final norm (which a caller may
        fold into its own next kernel), on this batch's path: "mega", one launch for the whole
        stack (`kernels/step/mega.py`) where its grid fits the GPU; "layer" (and "mega" where it
        does not fit), per layer three launches (norm + in-projection + conv, the state update,
        out-projection + residual; `kernels/step/layer.py`); "v1" and "split", `_cublas_stack`."""
        from worldssm.kernels.step.layer import backbone_path, mamba2_layer_step_triton
        from worldssm.kernels.step.mega import mamba2_backbone_step_mega, mega_fits

        c = self.cfg
        path = backbone_path(x.shape[0])
        if path in ("v1", "split"):
            return self._cublas_stack(slab, slots, x, reset, path)[0]
        one_eps = len({norm.eps for norm in self.norms}) == 1  # the launch takes one RMSNorm epsilon
        if path == "mega" and one_eps and mega_fits(
                x.device, x.shape[0], c.n_heads, c.d_state, c.head_dim, c.d_model):
            return mamba2_backbone_step_mega(x, self.mega_layers(slab), slots, reset, c.n_heads, c.head_dim,
                                             c.d_state, eps=c.norm_eps, norm_eps=self.norms[0].eps)
        res = x.contiguous()
        for i, (norm, mixer) in enumerate(zip(self.norms, self.mixers)):
            kw = mixer._kernel_args()
            kw["gate_norm_weight"] = kw.pop("norm_weight")
            res = mamba2_layer_step_triton(
                res, norm.weight, mixer.in_proj.weight, slab[f"{i}.conv"], slab[f"{i}.ssm"], slots, reset,
                out_weight=mixer.out_proj.weight, norm_eps=norm.eps, **kw,
            )
        return res

    def mega_layers(self, slab: State) -> list:
        """Each layer's weights and slab tensors as `kernels/step/mega.py` takes them (`MegaLayer`)."""
        from worldssm.kernels.step.mega import MegaLayer

        layers = []
        for i, (norm, mixer) in enumerate(zip(self.norms, self.mixers)):
            kw = mixer._kernel_args()
            layers.append(MegaLayer(norm.weight, mixer.in_proj.weight, kw["conv_weight"], kw["conv_bias"],
                                    kw["dt_bias"], kw["A"], kw["D"], kw["norm_weight"], mixer.out_proj.weight,
                                    slab[f"{i}.conv"], slab[f"{i}.ssm"]))
        return layers

    def step(self, state: State, x, reset):
        """Functional step: (state, x [B, D], reset [B]) -> (new state, y [B, D]); `state` is not modified."""
        new_state = {k: v.clone() for k, v in state.items()}
        slots = torch.arange(x.shape[0], device=x.device)
        y = self.step_slots(new_state, slots, x, reset)
        return new_state, y


class GRUBackbone(nn.Module):
    """Baseline core with the same interface: a residual stack of GRU cells (state [L, D])."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        self.cells = nn.ModuleList(nn.GRUCell(cfg.d_model, cfg.d_model) for _ in range(cfg.n_layers))
        self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)

    def state_spec(self):
        return {f"{i}.h": ((self.cfg.d_model,), torch.float32) for i in range(self.cfg.n_layers)}

    def initial_state(self, batch: int, device=None) -> State:
        device = device if device is not None else self.final_norm.weight.device
        return {k: torch.zeros(batch, *s, dtype=d, device=device) for k, (s, d) in self.state_spec().items()}

    def step_slots(self, slab: State, slots, x, reset):
        for i, cell in enumerate(self.cells):
            wdt = cell.weight_ih.dtype
            h = torch.where(reset[:, None], 0.0, slab[f"{i}.h"][slots]).to(wdt)
            h = cell(x.to(wdt), h)
            slab[f"{i}.h"][slots] = h.to(slab[f"{i}.h"].dtype)
            x = x + h.to(x.dtype)
        return self.final_norm(x)

    def step(self, state: State, x, reset):
        new_state = {k: v.clone() for k, v in state.items()}
        y = self.step_slots(new_state, torch.arange(x.shape[0], device=x.device), x, reset)
        return new_state, y

    def forward(self, x, state: State | None = None, resets=None):
        b, t, _ = x.shape
        if state is None:
            state = {k: v.to(upcast(x).dtype) for k, v in self.initial_state(b, x.device).items()}
        else:
            state = {k: v.clone() for k, v in state.items()}
        resets = torch.zeros(b, t, dtype=torch.bool, device=x.device) if resets is None else resets
        slots = torch.arange(b, device=x.device)
        ys = [self.step_slots(state, slots, x[:, i], resets[:, i]) for i in range(t)]
        return torch.stack(ys, 1), state


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """The backbone named by `cfg.kind`."""
    # Imported here: the transformer module imports RMSNorm from this one.
    from worldssm.model.transformer import TransformerBackbone

    return {"mamba2": Mamba2Backbone, "gru": GRUBackbone, "transformer": TransformerBackbone}[cfg.kind](cfg)
