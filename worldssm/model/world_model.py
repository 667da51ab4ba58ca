"""The world model: encoder -> categorical latent -> Mamba-2 backbone -> prior, reward, continue.

Indexing (DreamerV3's step convention): step t holds o_t, the action a_t taken from o_t, the
reward r_t received on arriving at o_t, and is_first / is_terminal flags. The posterior z_t comes
from o_t alone (so training runs one parallel scan); the backbone reads [z_t, a_t] and its output
h_t predicts the prior over z_{t+1}, r_{t+1} and the continue flag c_{t+1}. The decoder maps a
latent back to an observation.

Two verbs serve every layer above: `observe` (the agent saw o_t and took a_t) and `imagine` (the
model dreams: it feeds a latent drawn from its own prior instead of an observation).
`WorldModel.step_weights` lists, in one place, the arrays that one inference step reads, for the
step outside PyTorch (`worldssm.model.numpy_step`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from worldssm.model.config import WorldModelConfig
from worldssm.model.mamba2 import State, build_backbone
from worldssm.model.nets import (
    ActionEncoder,
    ImageDecoder,
    ImageEncoder,
    TwoHot,
    categorical_kl,
    mlp,
    run_mlp,
    latent_of,
    symexp,
    symlog,
    unimix_logits,
    unimix_probs,
    upcast,
)
from worldssm.model.weights import StepWeights, action_weights, array, linear_weights, mixer_weights, mlp_weights


class Prediction(NamedTuple):
    """What the model expects after a step, per agent."""

    prior_logp: torch.Tensor  # log-probs of z_{t+1} [B, V, K]
    reward: torch.Tensor  # expected r_{t+1} [B]
    cont: torch.Tensor  # probability that the episode continues after t+1 [B]
    h: torch.Tensor  # backbone output h_t [B, D]
    cont_logit: torch.Tensor  # the continue head's logit [B] (float32): `cont` is its sigmoid
    # exp(prior_logp) [B, V, K] where the step computed it on the way (the serving module path),
    # so the expected latent of the next step costs no exp pass; None elsewhere
    prior_probs: torch.Tensor | None = None


def observation_kind(space: dict) -> str:
    """'image' for uint8 [H, W, C] boxes, 'vector' for other boxes; anything else is rejected."""
    if space.get("type") != "box":
        raise ValueError(f"observation space must be a Box, got {space.get('type')!r}")
    shape = tuple(space["shape"])
    if str(space.get("dtype")) == "uint8" and len(shape) == 3 and shape[-1] in (1, 3):
        return "image"
    return "vector"


class WorldModel(nn.Module):
    """Mamba-2 world model over one observation space and one action space.

    Args:
        cfg: the model config.
        obs_space: {"type": "box", "shape", "dtype", "low", "high"} as stored in rollout headers.
        action_space: {"type": "discrete", "n"} or a box dict.
    """

    def __init__(self, cfg: WorldModelConfig, obs_space: dict, action_space: dict):
        super().__init__()
        self.cfg = cfg
        self.obs_space, self.action_space = obs_space, action_space
        self.obs_kind = observation_kind(obs_space)
        self.obs_shape = tuple(int(s) for s in obs_space["shape"])
        v, k, d, w = cfg.latent_vars, cfg.latent_classes, cfg.backbone.d_model, cfg.mlp_width
        if self.obs_kind == "image":
            self.encoder = ImageEncoder(self.obs_shape, cfg.cnn_depth, v * k)
            self.decoder = ImageDecoder(v * k + d, self.obs_shape, cfg.cnn_depth)
        else:
            n_obs = int(np.prod(self.obs_shape))
            self.encoder = mlp(n_obs, w, cfg.mlp_layers, v * k)
            self.decoder = mlp(v * k + d, w, cfg.mlp_layers, n_obs)
            if cfg.obs_norm:
                # Per-dimension location and scale of the observations (`set_obs_stats`, from the
                # training data; saved with the weights): the encoder reads, and the decoder
                # predicts, symlog((o - loc) / scale), so every dimension is learnt relative to its
                # own spread. Without it a dimension with a small spread (CartPole's cart position)
                # is reconstructed with the same absolute error as the wide ones, which put a floor
                # of about 0.1 under CartPole's normalised error at every horizon.
                self.register_buffer("obs_loc", torch.zeros(n_obs))
                self.register_buffer("obs_scale", torch.ones(n_obs))
        self.action_encoder = ActionEncoder(action_space, cfg.action_embed)
        self.in_proj = nn.Linear(v * k + cfg.action_embed, d)
        self.backbone = build_backbone(cfg.backbone)
        self.prior_head = mlp(d, w, cfg.mlp_layers, v * k)
        self.reward_head = mlp(d, w, cfg.mlp_layers, cfg.reward_bins)
        self.cont_head = mlp(d, w, cfg.mlp_layers, 1)
        self.twohot = TwoHot(cfg.reward_bins, cfg.reward_range)
        # Reward head starts at exactly 0 (DreamerV3): zero the last layer.
        nn.init.zeros_(self.reward_head[-1].weight)
        nn.init.zeros_(self.reward_head[-1].bias)

    # ----- pieces -------------------------------------------------------------------------------
    @property
    def normalises_obs(self) -> bool:
        return self.obs_kind == "vector" and self.cfg.obs_norm

    def set_obs_stats(self, mean, std) -> None:
        """Set the observation statistics (per dimension, arrays of obs_shape); a spread below
        1e-3 counts as 1e-3 (a constant dimension must not blow up a tiny deviation)."""
        if not self.normalises_obs:
            raise ValueError("this model keeps no observation statistics (image observations or obs_norm=False)")
        mean = torch.as_tensor(np.asarray(mean, np.float64).reshape(-1), dtype=torch.float32)
        std = torch.as_tensor(np.asarray(std, np.float64).reshape(-1), dtype=torch.float32)
        if mean.shape != self.obs_loc.shape or std.shape != self.obs_scale.shape:
            raise ValueError(f"observation statistics must have {self.obs_loc.numel()} values per dimension")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("observation statistics must be finite")
        with torch.no_grad():
            self.obs_loc.copy_(mean)
            self.obs_scale.copy_(std.clamp(min=1e-3))

    def _standardise(self, x: torch.Tensor) -> torch.Tensor:
        """symlog of the (standardised, where the model keeps statistics) flat observation."""
        if self.normalises_obs:
            x = (x - self.obs_loc.to(x.dtype)) / self.obs_scale.to(x.dtype)
        return symlog(x)

    def _posterior_logits(self, obs: torch.Tensor) -> torch.Tensor:
        """o [..., *obs_shape] -> the encoder's logits of z [..., V, K]."""
        if self.obs_kind == "image":
            feats = self.encoder(obs)
        else:
            x = obs.to(self.in_proj.weight.dtype).flatten(obs.dim() - len(self.obs_shape))
            feats = run_mlp(self.encoder, self._standardise(x))
        return feats.view(*feats.shape[:-1], self.cfg.latent_vars, -1)

    def posterior(self, obs: torch.Tensor) -> torch.Tensor:
        """o [..., *obs_shape] -> log-probs of z [..., V, K]."""
        return unimix_logits(self._posterior_logits(obs), self.cfg.unimix)

    def posterior_latent(self, obs: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        """`latent(posterior(obs))` for a serving step: with sample=False the class probabilities
        straight from the logits (`unimix_probs`), without the log and exp in between."""
        if sample:
            return self.latent(self.posterior(obs), sample, generator)
        probs = unimix_probs(self._posterior_logits(obs), self.cfg.unimix)
        return probs.reshape(*probs.shape[:-2], -1).detach()

    def next_latent(self, pred: Prediction, sample: bool = False, generator=None) -> torch.Tensor:
        """The latent the next step sees, from a step's prediction: `latent(pred.prior_logp)`,
        or with sample=False its `prior_probs` where the step kept them."""
        if not sample and pred.prior_probs is not None:
            return pred.prior_probs.reshape(*pred.prior_probs.shape[:-2], -1).detach()
        return self.latent(pred.prior_logp, sample, generator)

    def _prior_logits(self, h: torch.Tensor) -> torch.Tensor:
        """h [..., D] -> the prior head's logits of z_{t+1} [..., V, K]."""
        logits = run_mlp(self.prior_head, h)
        return logits.view(*logits.shape[:-1], self.cfg.latent_vars, -1)

    def prior(self, h: torch.Tensor) -> torch.Tensor:
        return unimix_logits(self._prior_logits(h), self.cfg.unimix)

    def decode(self, z: torch.Tensor, h_prev: torch.Tensor) -> torch.Tensor:
        """Predicted observation [..., *obs_shape] (float; pixels in [0, 255]).

        Args:
            z: the latent of this step [..., V*K].
            h_prev: the backbone output of the previous step [..., D] (the one whose prior drew z;
                zeros at an episode's first step), as in DreamerV3's (deter, stoch) features.
        """
        from worldssm.kernels import tf32_matmuls
        from worldssm.model import fused

        if z.dim() == 2 and fused.why_not_fused(self, False, z.shape[0]) is None:
            out = fused.decode_mlp(self, z, h_prev)  # the engine's serving path (CUDA)
        else:
            with tf32_matmuls(z.device):  # a serving step's products (`serving_tf32`); training never calls this
                if self.obs_kind == "image":
                    out = self.decoder(torch.cat([z, h_prev.to(z.dtype)], -1))
                else:
                    out = run_mlp(self.decoder, torch.cat([z, h_prev.to(z.dtype)], -1))
        if self.obs_kind == "image":
            return ((out.float() + 0.5) * 255.0).clamp(0, 255)
        x = symexp(out.float())
        if self.normalises_obs:
            x = x * self.obs_scale + self.obs_loc
        return x.view(*z.shape[:-1], *self.obs_shape)

    def _inputs(self, z: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        enc = self.action_encoder
        a = F.linear(enc.features(action), enc.proj.weight, enc.proj.bias)  # = enc(action)
        return F.linear(torch.cat([z, a.to(z.dtype)], -1), self.in_proj.weight, self.in_proj.bias)

    def _heads(self, h: torch.Tensor, serving: bool = False) -> Prediction:
        """The heads on h. serving: the prior's probabilities too (`Prediction.prior_probs`),
        its log-probs taken from them (two passes fewer than `prior`; equal to rounding)."""
        logit = upcast(run_mlp(self.cont_head, h).squeeze(-1))
        reward = self.twohot.mean(run_mlp(self.reward_head, h))
        if not serving:
            return Prediction(prior_logp=self.prior(h), reward=reward, cont=torch.sigmoid(logit), h=h, cont_logit=logit)
        probs = unimix_probs(self._prior_logits(h), self.cfg.unimix)
        return Prediction(prior_logp=torch.log(probs), reward=reward, cont=torch.sigmoid(logit), h=h,
                          cont_logit=logit, prior_probs=probs)

    # ----- the weights of one step, for a step outside PyTorch ----------------------------------
    def why_no_step_weights(self) -> str | None:
        """None when `step_weights` describes this model, else the reason it cannot."""
        bb = self.cfg.backbone
        if self.obs_kind != "vector":
            return f"{self.obs_kind} observations"
        if bb.kind != "mamba2":
            return f"the {bb.kind} backbone"
        if any(p.dtype != torch.float32 for p in self.parameters()):
            return "weights are not float32"
        return None

    def step_weights(self) -> StepWeights:
        """Copies of the arrays one inference step reads (see `StepWeights`). The one place that
        names the model's modules for `worldssm.model.numpy_step`: a change to the structure
        of the model changes this method with it.

        Raises:
            ValueError: `why_no_step_weights` names a reason.
        """
        why_not = self.why_no_step_weights()
        if why_not is not None:
            raise ValueError(f"step_weights cannot describe this model: {why_not}")
        cfg, bb = self.cfg, self.cfg.backbone
        return StepWeights(
            encoder=mlp_weights(self.encoder), decoder=mlp_weights(self.decoder),
            prior_head=mlp_weights(self.prior_head), reward_head=mlp_weights(self.reward_head),
            cont_head=mlp_weights(self.cont_head), action=action_weights(self.action_encoder),
            in_proj=linear_weights(self.in_proj.weight, self.in_proj.bias),
            layers=tuple(mixer_weights(norm, m) for norm, m in zip(self.backbone.norms, self.backbone.mixers)),
            final_norm=array(self.backbone.final_norm.weight), reward_bins=array(self.twohot.bins),
            obs_loc=array(self.obs_loc) if self.normalises_obs else np.zeros(int(np.prod(self.obs_shape)), np.float32),
            obs_scale=array(self.obs_scale) if self.normalises_obs else np.ones(int(np.prod(self.obs_shape)), np.float32),
            norm_eps=float(bb.norm_eps), latent_vars=cfg.latent_vars, latent_classes=cfg.latent_classes,
            unimix=float(cfg.unimix),
            n_heads=bb.n_heads, head_dim=bb.head_dim, d_state=bb.d_state, obs_shape=self.obs_shape,
        )

    # ----- training -----------------------------------------------------------------------------
    def forward(self, batch: dict, state: State | None = None, sample: bool = True, generator=None):
        """Losses over a batch of sequences.

        Args:
            batch: tensors [B, T, ...]: obs, action, reward, is_first, is_terminal.
            state: backbone state carried in from a previous segment, or None.
            sample: draw posterior latents (training) or take their expectation.

        Returns:
            (loss scalar, metrics dict of floats-as-tensors, final backbone state, outputs dict).
        """
        cfg = self.cfg
        post = self.posterior(batch["obs"])  # [B, T, V, K]
        z = latent_of(post, sample, generator)  # [B, T, V*K]
        if sample and cfg.mean_rows > 0:  # these rows see what inference sees: the expectation
            rows = torch.rand(z.shape[0], generator=generator, device=z.device) < cfg.mean_rows
            z = torch.where(rows[:, None, None], latent_of(post, False), z)
        h, state = self.backbone(self._inputs(z, batch["action"]), state, resets=batch["is_first"].bool())
        prior = self.prior(h)  # [B, T, V, K]: predicts z_{t+1}
        valid = (~batch["is_first"][:, 1:].bool()).float()  # [B, T-1]: t+1 continues the episode of t
        denom = valid.sum().clamp(min=1.0)

        # The decoder of o_t sees z_t and h_{t-1} (zeros at the first step of an episode).
        h_prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)
        h_prev = h_prev * (~batch["is_first"].bool())[..., None].to(h.dtype)
        recon = self.decoder(torch.cat([z, h_prev.to(z.dtype)], -1))
        if self.obs_kind == "image":
            target = batch["obs"].float() / 255.0 - 0.5
            rec = (recon.float() - target).pow(2).sum((-1, -2, -3))
        else:
            target = self._standardise(batch["obs"].to(recon.dtype).flatten(2))
            rec = (recon.float() - target).pow(2).sum(-1)
        rec = rec.mean()

        post_next = post[:, 1:]
        prior_now = prior[:, :-1]
        dyn_kl = categorical_kl(post_next.detach(), prior_now)  # [B, T-1]
        rep_kl = categorical_kl(post_next, prior_now.detach())
        dyn = (dyn_kl.clamp(min=cfg.free_bits) * valid).sum() / denom
        rep = (rep_kl.clamp(min=cfg.free_bits) * valid).sum() / denom
        rew_logits = self.reward_head(h[:, :-1])
        rew = (self.twohot.loss(rew_logits, batch["reward"][:, 1:]) * valid).sum() / denom
        cont_target = 1.0 - batch["is_terminal"][:, 1:].float()
        con_logit = self.cont_head(h[:, :-1]).squeeze(-1).float()
        con = (F.binary_cross_entropy_with_logits(con_logit, cont_target, reduction="none") * valid).sum() / denom

        loss = cfg.loss_rec * rec + cfg.loss_rew * rew + cfg.loss_con * con + cfg.loss_dyn * dyn + cfg.loss_rep * rep
        metrics = {
            "loss": loss.detach(), "rec": rec.detach(), "rew": rew.detach(), "con": con.detach(),
            "dyn": dyn.detach(), "rep": rep.detach(), "kl": (dyn_kl * valid).sum().detach() / denom,
        }
        return loss, metrics, state, {"post": post, "z": z, "h": h, "prior": prior}

    # ----- serving ------------------------------------------------------------------------------
    def initial_state(self, batch: int, device=None) -> State:
        return self.backbone.initial_state(batch, device)

    def state_nbytes(self, state: State) -> int:
        """Bytes of recurrent state held for the agents in `state`."""
        return sum(t.numel() * t.element_size() for t in state.values())

    def latent(self, logp: torch.Tensor, sample: bool = False, generator=None) -> torch.Tensor:
        """Latent [..., V*K] from log-probs [..., V, K]: a one-hot draw, or (sample=False) the
        expected one-hot, i.e. the class probabilities (`nets.latent_of`)."""
        return latent_of(logp, sample, generator).detach()

    def observe_slots(self, slab: State, slots, obs, action, reset, sample=False, generator=None) -> Prediction:
        """In-place observe for rows `slots` of a state slab (the engine's path). Fused Triton
        launches where `fused.why_not_fused` allows (CUDA, expected latents, vector observations),
        else `observe_modules`."""
        from worldssm.model import fused

        if fused.why_not_fused(self, sample, slots.shape[0]) is None:
            return fused.observe(self, slab, slots, obs, action, reset)
        return self.observe_modules(slab, slots, obs, action, reset, sample, generator)

    def observe_modules(self, slab: State, slots, obs, action, reset, sample=False, generator=None) -> Prediction:
        """`observe_slots` on the module path whatever `fused.why_not_fused` says: encoder,
        latent, input, the backbone's step (its kernels' path by batch), heads; on CUDA the
        float32 products on TF32 unless WORLDSSM_TF32=0 (`worldssm.kernels.tf32_matmuls`)."""
        from worldssm.kernels import tf32_matmuls

        with tf32_matmuls(slots.device):
            z = self.posterior_latent(obs, sample, generator)
            return self._heads(self._step_backbone(slab, slots, self._inputs(z, action), reset), serving=True)

    def imagine_slots(self, slab: State, slots, z, action) -> Prediction:
        """In-place imagine for rows `slots`: feed latent z [B, V*K] (drawn from a prior) with an action."""
        from worldssm.model import fused

        if fused.why_not_fused(self, False, slots.shape[0]) is None:
            return fused.imagine(self, slab, slots, z, action)
        from worldssm.kernels import tf32_matmuls

        with tf32_matmuls(slots.device):
            x = self._inputs(z, action)
            return self._heads(self._step_backbone(slab, slots, x, torch.zeros_like(slots, dtype=torch.bool)),
                               serving=True)

    def _step_backbone(self, slab: State, slots, x, reset):
        """The backbone's in-place step in its own weights' dtype (bfloat16 after
        `Engine(precision="bfloat16")`), its output back in the dtype of `x`."""
        dt = self.backbone.final_norm.weight.dtype
        return self.backbone.step_slots(slab, slots, x.to(dt), reset).to(x.dtype)

    def observe(self, state: State, obs, action, reset, sample=False, generator=None):
        """(state, o_t [B, ...], a_t [B, ...], reset [B]) -> (new state, Prediction for t+1)."""
        new_state = {k: v.clone() for k, v in state.items()}
        slots = torch.arange(obs.shape[0], device=obs.device)
        return new_state, self.observe_slots(new_state, slots, obs, action, reset, sample, generator)

    def imagine(self, state: State, z, action):
        """(state, z_t [B, V*K], a_t [B, ...]) -> (new state, Prediction for t+1)."""
        new_state = {k: v.clone() for k, v in state.items()}
        slots = torch.arange(z.shape[0], device=z.device)
        return new_state, self.imagine_slots(new_state, slots, z, action)

    def observe_sequence(self, obs, action, is_first, state: State | None = None, sample=False, generator=None):
        """observe over [B, T] in one scan -> (state, Prediction with [B, T, ...] fields)."""
        z = self.latent(self.posterior(obs), sample, generator)
        h, state = self.backbone(self._inputs(z, action), state, resets=is_first.bool())
        return state, self._heads(h)

    def rollout(self, state: State, pred: Prediction, actions, sample=False, generator=None):
        """Imagine len(actions) steps open loop from `pred` (the prediction after the last observe).

        Args:
            actions: [B, H, ...] actions a_{t+1}, ..., a_{t+H}.

        Returns:
            (state, dict of [B, H, ...]: obs (decoded o_{t+k}), reward r_{t+k}, cont c_{t+k}).
            Index k-1 of each holds the prediction k steps after the last observation.
        """
        obs, rew, cont = [], [], []
        for k in range(actions.shape[1]):
            z = self.latent(pred.prior_logp, sample, generator)
            obs.append(self.decode(z, pred.h))
            rew.append(pred.reward)
            cont.append(pred.cont)
            if k + 1 < actions.shape[1]:
                state, pred = self.imagine(state, z, actions[:, k])
        return state, {"obs": torch.stack(obs, 1), "reward": torch.stack(rew, 1), "cont": torch.stack(cont, 1)}
