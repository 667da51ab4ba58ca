"""TransformerBackbone: one module, two modes, against a per-agent loop that is the specification.

T steps equal one forward over T and both equal `reference_backbone` (resets inside, a carried
KV cache, T below and above the window); a reset row's old cache is never read; `step_slots`
writes one ring slot per layer and `pos` of its own rows only; the state grows linearly with the
context (measured from a slab) while Mamba-2's does not; a world model with this backbone runs
through the Engine; `preset_for` matches the Mamba-2 presets' parameter counts.
"""

import dataclasses
import re

import numpy as np
import pytest
import torch

from tests.model.wm_helpers import BOX_ACT, DISC_ACT, IMG_OBS, VEC_OBS, randomise_parameters
from worldssm.engine import Engine
from worldssm.engine.state import StateSlab
from worldssm.model import WorldModel, build_backbone, preset
from worldssm.model.config import BackboneConfig, preset_for
from worldssm.model.numpy_step import supports
from worldssm.model.transformer import TransformerBackbone, rope_tables

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-4, atol=1e-5)}
CONTEXT = 5


def backbone(context=CONTEXT, seed=0) -> TransformerBackbone:
    """DEBUG-sized, float64, every parameter random: 2 layers, 3 heads of 4, MLP 2x."""
    cfg = dataclasses.replace(preset("DEBUG").backbone, kind="transformer", n_heads=3, head_dim=4,
                              mlp_ratio=2, context=context)
    torch.manual_seed(seed)
    return randomise_parameters(build_backbone(cfg).double(), seed)


def reference_backbone(bb: TransformerBackbone, x, resets):
    """The specification: per agent, per step, attend over the last C steps of its own episode.

    Each agent keeps, per layer, the list of its episode's (rotated key, value); a reset empties
    the lists and restarts the position at 0. x [B, T, D], resets bool [B, T] -> y [B, T, D].
    """
    c, (b, t, _) = bb.cfg.context, x.shape
    y = torch.empty_like(x)
    for row in range(b):
        history, pos = [[] for _ in bb.blocks], 0
        for step in range(t):
            if resets[row, step]:
                history, pos = [[] for _ in bb.blocks], 0
            h = x[row, step]  # [D]
            cos, sin = rope_tables(torch.tensor(pos), bb.cfg.head_dim, x.dtype)
            for layer, blk in enumerate(bb.blocks):
                q, k, v = blk.qkv_rotated(h, cos, sin)  # [H, P]
                history[layer].append((k, v))
                keys = torch.stack([kv[0] for kv in history[layer][-c:]])  # [n, H, P]
                vals = torch.stack([kv[1] for kv in history[layer][-c:]])
                weights = (torch.einsum("hp,nhp->hn", q, keys) / q.shape[-1] ** 0.5).softmax(-1)  # [H, n]
                h = blk.finish(h, torch.einsum("hn,nhp->hp", weights, vals))
            y[row, step] = bb.final_norm(h)
            pos += 1
    return y


def fresh_state(bb, b):
    """The initial state with float64 caches (the float64 tests keep every step in float64)."""
    return {k: v.double() if v.is_floating_point() else v for k, v in bb.initial_state(b).items()}


def run_steps(bb, state, x, resets):
    """T functional steps -> (y [B, T, D], final state)."""
    ys = []
    for t in range(x.shape[1]):
        state, y = bb.step(state, x[:, t], resets[:, t])
        ys.append(y)
    return torch.stack(ys, 1), state


def poison_unwritten_slots(state, resets_next):
    """NaN into every ring slot a correct step never reads: slots j >= pos, and the whole cache
    of rows whose next step resets."""
    state = {k: v.clone() for k, v in state.items()}
    j = torch.arange(next(v for k, v in state.items() if k != "pos").shape[1])
    stale = (j >= state["pos"][:, None]) | resets_next[:, None]  # [B, C]
    for k, v in state.items():
        if k != "pos":
            v[stale] = float("nan")
    return state


@pytest.mark.parametrize("t", [3, 13])
def test_steps_equal_forward_and_reference_with_resets_and_a_carried_cache(t):
    """A prefix of 7 steps gives the carried state (rows at positions 7 > C, 2, 1, and one that
    resets at once); then T steps, one forward over T and the reference over prefix + T agree,
    outputs and final states, for T below and above the window."""
    bb = backbone()
    prefix = 7
    g = torch.Generator().manual_seed(t)
    x = torch.randn(4, prefix + t, bb.cfg.d_model, generator=g, dtype=torch.float64)
    resets = torch.zeros(4, prefix + t, dtype=torch.bool)
    resets[:, 0] = True
    resets[1, 5] = resets[2, prefix - 1] = resets[3, prefix] = True
    resets[0, prefix + 2] = resets[2, prefix + t - 1] = True  # resets inside the tested part
    with torch.no_grad():
        _, state = bb(x[:, :prefix], None, resets[:, :prefix])
        assert state["pos"].tolist() == [7, 2, 1, 7]
        state = poison_unwritten_slots(state, resets[:, prefix])
        y_fwd, s_fwd = bb(x[:, prefix:], state, resets[:, prefix:])
        y_steps, s_steps = run_steps(bb, state, x[:, prefix:], resets[:, prefix:])
        y_ref = reference_backbone(bb, x, resets)[:, prefix:]
    torch.testing.assert_close(y_fwd, y_ref, **TOL[torch.float64])
    torch.testing.assert_close(y_steps, y_ref, **TOL[torch.float64])
    assert s_fwd.keys() == s_steps.keys() == set(bb.state_spec())
    for k in s_fwd:
        torch.testing.assert_close(s_fwd[k], s_steps[k], equal_nan=True, **TOL[torch.float64])
    assert s_fwd["pos"].tolist() == [t - 2, 2 + t, 1, t]


def test_window_and_resets_bound_what_an_output_depends_on():
    """Changing step s changes outputs from s on, up to the receptive field of L layers over a
    window of C (s + L*(C-1)), and nothing beyond it or past a reset; in both modes."""
    bb = backbone()
    c, n_layers, t = CONTEXT, bb.cfg.n_layers, 20
    reach = n_layers * (c - 1)  # the last output step s can reach: s + reach
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, t, bb.cfg.d_model, generator=g, dtype=torch.float64)
    resets = torch.zeros(2, t, dtype=torch.bool)
    resets[:, 0] = True
    resets[1, 6] = True  # row 1: the perturbed step 2 lies in an episode that ends at 6
    x2 = x.clone()
    x2[:, 2] += 1.0
    with torch.no_grad():
        for run in (lambda xx: bb(xx, None, resets)[0], lambda xx: run_steps(bb, fresh_state(bb, 2), xx, resets)[0]):
            moved = (run(x2) - run(x)).abs().amax(-1) > 1e-9  # [2, T]
            assert moved[0].tolist() == [2 <= s <= 2 + reach for s in range(t)]
            assert moved[1].tolist() == [2 <= s < 6 for s in range(t)]


def test_a_reset_row_never_reads_its_old_cache():
    """A row whose slab holds NaN everywhere and a garbage position, stepped with a reset and then
    past the window, gives exactly what a fresh agent gives; so does a forward carrying it."""
    bb = backbone()
    g = torch.Generator().manual_seed(1)
    t = CONTEXT + 3
    x = torch.randn(1, t, bb.cfg.d_model, generator=g, dtype=torch.float64).expand(2, t, -1)
    resets = torch.zeros(2, t, dtype=torch.bool)
    resets[:, 0] = True
    slab = fresh_state(bb, 2)
    for k, v in slab.items():
        v[0] = 12345 if k == "pos" else float("nan")
    ys = []
    with torch.no_grad():
        y_fwd, _ = bb(x, slab, resets)
        y_fresh, _ = bb(x, None, resets)
        for s in range(t):
            ys.append(bb.step_slots(slab, torch.tensor([0, 1]), x[:, s], resets[:, s]))
    y_steps = torch.stack(ys, 1)
    assert torch.isfinite(y_steps).all() and torch.isfinite(y_fwd).all()
    assert torch.equal(y_steps[0], y_steps[1])
    torch.testing.assert_close(y_fwd, y_fresh, **TOL[torch.float64])
    torch.testing.assert_close(y_steps, y_fresh, **TOL[torch.float64])


def test_step_slots_writes_one_ring_slot_per_layer_and_only_its_rows():
    bb = backbone()
    c = CONTEXT
    g = torch.Generator().manual_seed(2)
    slab = StateSlab(bb.state_spec(), 6).tensors
    for k, v in slab.items():
        if k == "pos":
            v.copy_(torch.tensor([0, 3, 9, 4, 2, 11, 7]))
        else:
            v.copy_(torch.randn(v.shape, generator=g))
    before = {k: v.clone() for k, v in slab.items()}
    slots, reset = torch.tensor([5, 2, 3]), torch.tensor([False, False, True])
    with torch.no_grad():
        bb.step_slots(slab, slots, torch.randn(3, bb.cfg.d_model, generator=g, dtype=torch.float64), reset)
    others = torch.tensor([0, 1, 4, 6])
    for k in slab:
        assert torch.equal(slab[k][others], before[k][others]), k
    assert slab["pos"][slots].tolist() == [12, 10, 1]
    written = [11 % c, 9 % c, 0]  # pos % C, and slot 0 for the row that reset
    for k in slab:
        if k == "pos":
            continue
        for row, ring in zip(slots.tolist(), written):
            keep = torch.arange(c) != ring
            assert torch.equal(slab[k][row, keep], before[k][row, keep]), (k, row)
            assert not torch.equal(slab[k][row, ring], before[k][row, ring]), (k, row)


def slab_bytes_per_agent(bb) -> int:
    """Bytes one agent holds in a slab built from the backbone's spec (scratch row included in
    the slab, divided out)."""
    slab = StateSlab(bb.state_spec(), 1)
    return sum(t.nbytes // t.shape[0] for t in slab.tensors.values())


def test_state_grows_linearly_with_context_and_mamba2_state_does_not():
    """BASE-sized: transformer bytes per agent at contexts 64, 1024, 16384 are 2 (k, v) * L * C *
    H * P * 4 + 8 (pos); Mamba-2's are the same at every context."""
    sizes = {}
    for kind in ("transformer", "mamba2"):
        base = preset_for("BASE", kind).backbone
        with torch.device("meta"):  # the parameters are not needed, only the state spec
            sizes[kind] = [slab_bytes_per_agent(build_backbone(dataclasses.replace(base, context=c)))
                           for c in (64, 1024, 16384)]
    tf = preset_for("BASE", "transformer").backbone
    per_step = 2 * tf.n_layers * tf.n_heads * tf.head_dim * 4
    assert sizes["transformer"] == [per_step * c + 8 for c in (64, 1024, 16384)]
    assert sizes["transformer"] == [262_152, 4_194_312, 67_108_872]
    assert sizes["mamba2"] == [555_008] * 3


def debug_transformer_model(seed=0, context=None) -> WorldModel:
    cfg = preset_for("DEBUG", "transformer")
    if context is not None:
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, context=context))
    torch.manual_seed(seed)
    return randomise_parameters(WorldModel(cfg, VEC_OBS, DISC_ACT), seed).eval()


def test_engine_runs_the_world_model_like_functional_observe_and_imagine():
    """Engine (torch path) on shuffled slots of a larger slab, against model.observe / imagine
    on a cloned state: 10 observes (a reset inside, past the window of 4) then 3 imagines."""
    model = debug_transformer_model(context=4)
    rng = np.random.default_rng(0)
    eng = Engine(model, 8, impl="auto")
    assert eng.impl == "torch"
    eng.join(2)
    slots = eng.join(4)[[2, 0, 3, 1]]
    state = model.initial_state(4)
    obs = rng.standard_normal((10, 4, 3)).astype(np.float32) * 2
    act = rng.integers(0, 5, (13, 4))
    resets = np.zeros((10, 4), bool)
    resets[0] = True
    resets[6, 1] = True
    with torch.no_grad():
        for t in range(10):
            out = eng.observe(slots, obs[t], act[t], resets[t])
            state, pred = model.observe(state, torch.from_numpy(obs[t]), torch.from_numpy(act[t]),
                                        torch.from_numpy(resets[t]))
            torch.testing.assert_close(out.reward, pred.reward, **TOL[torch.float32])
            torch.testing.assert_close(out.cont, pred.cont, **TOL[torch.float32])
        for t in range(10, 13):
            z = model.latent(pred.prior_logp)
            out = eng.imagine(slots, act[t])
            state, pred = model.imagine(state, z, torch.from_numpy(act[t]))
            torch.testing.assert_close(out.reward, pred.reward, **TOL[torch.float32])
    for k, v in state.items():
        torch.testing.assert_close(eng.slab.tensors[k][torch.from_numpy(slots)], v, **TOL[torch.float32])
    assert state["pos"].tolist() == [13, 7, 13, 13]


def test_engine_numpy_path_refuses_the_transformer_with_its_reason():
    model = debug_transformer_model()
    assert supports(model, False, torch.device("cpu")) == "the transformer backbone"
    with pytest.raises(ValueError, match="impl='numpy' cannot run this engine: the transformer backbone"):
        Engine(model, 4, impl="numpy")


def recorded_counts() -> dict[tuple[str, str], tuple[int, int]]:
    """(preset, backbone) -> (whole model, backbone) as written in `preset_for`'s docstring."""
    rows, name = {}, None
    for line in preset_for.__doc__.splitlines():
        m = re.match(r"\s+(DEBUG|SMALL|BASE)?\s*(mamba2|gru|transformer)\s*([\d,]+)\s*\(([\d,]+)\)", line)
        if m:
            name = m.group(1) or name
            rows[(name, m.group(2))] = tuple(int(g.replace(",", "")) for g in m.group(3, 4))
    return rows


def count(cfg, obs_space, act_space) -> tuple[int, int]:
    with torch.device("meta"):  # counted without allocating
        model = WorldModel(cfg, obs_space, act_space)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return n(model), n(model.backbone)


@pytest.mark.parametrize("name", ["DEBUG", "SMALL", "BASE"])
@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_preset_for_matches_the_mamba2_parameter_count_within_10_percent(name, kind):
    cfg = preset_for(name, kind)
    assert cfg.backbone.kind == kind and cfg.backbone.d_model == preset(name).backbone.d_model
    for obs_space, act_space in ((VEC_OBS, BOX_ACT), (IMG_OBS, DISC_ACT)):
        got, want = count(cfg, obs_space, act_space)[0], count(preset(name), obs_space, act_space)[0]
        assert abs(got / want - 1) <= 0.10, (obs_space["shape"], got, want)
    recorded = recorded_counts()
    assert recorded[(name, kind)] == count(cfg, VEC_OBS, BOX_ACT)
    assert recorded[(name, "mamba2")] == count(preset(name), VEC_OBS, BOX_ACT)
    assert preset_for(name, "mamba2") == preset(name)


@pytest.mark.parametrize("fields,named", [
    (dict(context=0), "context"), (dict(mlp_ratio=0), "mlp_ratio"), (dict(kind="lstm"), "kind"),
    (dict(kind="transformer", head_dim=5), "head_dim"),
    (dict(kind="transformer", state_dtype="bfloat16"), "state_dtype"),
])
def test_config_validation_names_the_field(fields, named):
    with pytest.raises(ValueError, match=f"BackboneConfig.{named}"):
        BackboneConfig(**fields)


def test_preset_for_rejects_an_unknown_backbone():
    with pytest.raises(ValueError, match="backbone must be one of"):
        preset_for("SMALL", "lstm")
