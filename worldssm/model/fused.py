"""The whole world-model step as fused Triton launches: encoder, input, backbone, heads.

At BASE with two hidden MLP layers an observe step is 3 encoder launches (the last one ends in
the posterior's unimix softmax, giving the latent), 1 input launch (latent and action embedding
through `in_proj`), 3 per backbone layer, 2 launches shared by the three heads (the first one
applies the backbone's final RMSNorm) and one last launch for the three heads' output layers
(unimix log-probabilities, two-hot reward mean, continue sigmoid): 19 launches; up to
`MEGA_MAX_BATCH` agents the backbone is one launch (`kernels/step/mega.py`), so 8.
`WorldModel.observe_slots` / `imagine_slots` take this path when `why_not_fused` says nothing
against it (by default at every batch, over whichever path the backbone takes; with IEEE
products up to `FUSED_MAX_BATCH_IEEE` agents); results equal the module path's within rounding
(tests/kernels/test_fused_model.py). Above 64 agents the layers multiply with `tl.dot` on TF32
inputs unless WORLDSSM_TF32=0 (`worldssm.kernels.serving_tf32`), as the module path's cuBLAS
products do inside `tf32_matmuls`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from worldssm.kernels import resolve_impl


# With TF32 products (the default) the whole step is fused at every batch, over whichever path
# the backbone takes (the layer path up to LAYER_MAX_BATCH, the split path's cuBLAS projections
# above, `Mamba2Backbone.residual_fused`): the fused encoder and heads beat the module heads'
# cuBLAS GEMMs and separate norms and softmaxes everywhere measured. H100, BASE whole step: 1,024
# agents 576 us (kernels/mlp/rows.py) against 602; 4,096 agents 1,960 (the 2D tiles of
# kernels/mlp/triton.py's TILE_PLAN) against 2,093; 16,384 7,408 against 7,789
# (tests/bench/results/experiments/wm-mlp-tiles-h100.json). With WORLDSSM_TF32=0 the fused heads' IEEE dots lose above 64 agents
# (1,028.4 us at 1,024 against 773.0; experiments/wm-heads-tf32-h100.json), so the limit is then
# FUSED_MAX_BATCH_IEEE on every path but a forced WORLDSSM_STEP_PATH=layer, which runs the fused
# step at every batch.
FUSED_MAX_BATCH = None  # no limit
FUSED_MAX_BATCH_IEEE = 64


def fused_max_batch() -> int | None:
    """The largest batch run as the fused whole step (None: every batch), by `serving_tf32()`;
    WORLDSSM_STEP_PATH=layer lifts it."""
    from worldssm.kernels import serving_tf32

    return FUSED_MAX_BATCH if serving_tf32() else FUSED_MAX_BATCH_IEEE


def why_not_fused(wm, sample: bool, batch: int) -> str | None:
    """None when the fused step serves this call of `batch` agents, else the reason (the module
    path runs)."""
    bb = wm.cfg.backbone
    if sample:
        return "latents are sampled (the fused step takes the expectation)"
    if wm.obs_kind != "vector":
        return f"{wm.obs_kind} observations"
    if bb.kind != "mamba2":
        return f"the {bb.kind} backbone"
    device = wm.in_proj.weight.device
    if resolve_impl(bb.kernels, device.type) != "triton":
        return "the backbone runs the reference kernels"
    from worldssm.kernels.step.layer import step_path

    limit = fused_max_batch()
    if step_path() != "layer" and limit is not None and batch > limit:
        name = "FUSED_MAX_BATCH" if limit == FUSED_MAX_BATCH else "FUSED_MAX_BATCH_IEEE (WORLDSSM_TF32=0)"
        return f"{batch} agents is above {name}={limit} (WORLDSSM_STEP_PATH=layer forces it)"
    if any(p.dtype != torch.float32 for n, p in wm.named_parameters() if not n.startswith("backbone.")):
        return "encoder or head weights are not float32"
    return None


def _layers(seq: nn.Sequential):
    lins = [m for m in seq if isinstance(m, nn.Linear)]
    lns = [m for m in seq if isinstance(m, nn.LayerNorm)]
    return lins, lns


def _stats(x, width: int, groups: int):
    """A buffer for the LayerNorm statistics of a layer of `width` outputs per group, where its
    launch can leave them (`kernels.mlp.triton.ln_stats_buffer`), else None."""
    from worldssm.kernels.mlp.triton import ln_stats_buffer

    return ln_stats_buffer(x.shape[0], width, groups, x.device)


def _mlp_tail(x, seqs, grouped: bool, stats):
    """Hidden layers 1.. of MLPs whose first layer gave x (grouped: one slice per MLP) and left
    `stats` (or None); returns the last hidden pre-norm activations, their LayerNorm statistics
    (or None) and the LayerNorms still to apply (one per MLP)."""
    from worldssm.kernels.mlp.triton import PRO_LN_SILU, fused_linear

    parts = [_layers(s) for s in seqs]
    n_hidden = len(parts[0][1])
    for i in range(1, n_hidden):
        nxt = _stats(x, parts[0][0][i].out_features, len(parts))
        x, _ = fused_linear(x, [p[0][i].weight for p in parts], [p[0][i].bias for p in parts], pro=PRO_LN_SILU,
                            ln=([p[1][i - 1].weight for p in parts], [p[1][i - 1].bias for p in parts]),
                            grouped_input=grouped, eps=parts[0][1][i - 1].eps, stats_in=stats, stats_out=nxt)
        stats = nxt
    return x, stats, [(p[0][-1], p[1][-1]) for p in parts]


def _latent_from_obs(wm, obs):
    from worldssm.kernels.mlp.triton import EPI_PROBS, PRO_LN_SILU, PRO_SYMLOG, fused_linear

    x = obs.to(torch.float32).flatten(1).contiguous()
    lins, lns = _layers(wm.encoder)
    loc = wm.obs_loc if wm.normalises_obs else torch.zeros(x.shape[1], device=x.device)
    scale = wm.obs_scale if wm.normalises_obs else torch.ones(x.shape[1], device=x.device)
    st = _stats(x, lins[0].out_features, 1)
    h, _ = fused_linear(x, [lins[0].weight], [lins[0].bias], pro=PRO_SYMLOG, pro_a=loc, pro_b=scale, stats_out=st)
    h, st, ((last, ln),) = _mlp_tail(h, [wm.encoder], False, st)
    z, _ = fused_linear(h, [last.weight], [last.bias], pro=PRO_LN_SILU, ln=([ln.weight], [ln.bias]), eps=ln.eps,
                        epi=EPI_PROBS, classes=wm.cfg.latent_classes, unimix=wm.cfg.unimix, stats_in=st)
    return z


def decode_mlp(wm, z, h_prev):
    """The vector decoder's MLP on [z | h_prev] in fused launches: `run_mlp(wm.decoder, ...)`
    within rounding, each LayerNorm + SiLU folded into the next layer's prologue and its
    statistics into the previous layer's epilogue (3 launches and one concatenation at two
    hidden layers, where the module path takes 2 GEMMs, 2 LayerNorms, 2 SiLUs and a GEMM)."""
    from worldssm.kernels.mlp.triton import PRO_LN_SILU, fused_linear

    x = torch.cat([z, h_prev.to(z.dtype)], -1).to(torch.float32).contiguous()
    lins, _ = _layers(wm.decoder)
    st = _stats(x, lins[0].out_features, 1)
    y, _ = fused_linear(x, [lins[0].weight], [lins[0].bias], stats_out=st)
    y, st, ((last, ln),) = _mlp_tail(y, [wm.decoder], False, st)
    out, _ = fused_linear(y, [last.weight], [last.bias], pro=PRO_LN_SILU, ln=([ln.weight], [ln.bias]), eps=ln.eps,
                          stats_in=st)
    return out


def _step(wm, slab, slots, z, action, reset):
    from worldssm.kernels.mlp.triton import (
        PRO_RMS,
        fused_linear,
        heads_out,
    )
    from worldssm.model.world_model import Prediction

    enc = wm.action_encoder
    bb = wm.backbone
    act = action.reshape(-1) if enc.discrete else enc.features(action).contiguous()
    x, _ = fused_linear(z.contiguous(), [wm.in_proj.weight], [wm.in_proj.bias], action=act,
                        action_proj=(enc.proj.weight, enc.proj.bias), action_discrete=enc.discrete,
                        out_dtype=bb.final_norm.weight.dtype)
    res = bb.residual_fused(slab, slots, x, reset)
    heads = [wm.prior_head, wm.reward_head, wm.cont_head]
    firsts = [_layers(s)[0][0] for s in heads]
    st = _stats(res, firsts[0].out_features, len(firsts))
    hid, h = fused_linear(res, [f.weight for f in firsts], [f.bias for f in firsts], pro=PRO_RMS,
                          pro_a=bb.final_norm.weight, store_pro=True, eps=bb.cfg.norm_eps, stats_out=st)
    hid, st, lasts = _mlp_tail(hid, heads, True, st)
    logp, probs, reward, _, cont, logit = heads_out(hid, lasts, classes=wm.cfg.latent_classes, unimix=wm.cfg.unimix,
                                                    bins=wm.twohot.bins, eps=lasts[0][1].eps, stats=st)
    shape = (-1, wm.cfg.latent_vars, wm.cfg.latent_classes)
    # The probabilities that heads_out leaves beside the log-probabilities are the next latent
    # (`WorldModel.next_latent`), as the serving module path's are: no exp of prior_logp after.
    return Prediction(prior_logp=logp.view(shape), reward=reward, cont=cont, h=h, cont_logit=logit,
                      prior_probs=probs.view(shape))


def observe(wm, slab, slots, obs, action, reset):
    """`WorldModel.observe_slots` (expected latents) in fused launches."""
    return _step(wm, slab, slots, _latent_from_obs(wm, obs), action, reset)


def imagine(wm, slab, slots, z, action):
    """`WorldModel.imagine_slots` in fused launches."""
    return _step(wm, slab, slots, z, action, torch.zeros_like(slots, dtype=torch.bool))
