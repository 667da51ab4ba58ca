"""The whole world-model step in fused launches (`worldssm.model.fused`) equals the module path:
encoder, latent, action input, backbone, every head; observe and imagine; discrete and Box actions."""

import dataclasses
import functools

import pytest
import torch

from tests.kernels.triton_here import require_triton

DEV = require_triton()

from worldssm.model import WorldModel, fused, preset  # noqa: E402
from worldssm.model.nets import symlog  # noqa: E402

pytestmark = pytest.mark.usefixtures("poison")


@pytest.fixture(autouse=True)
def layer_path(monkeypatch):
    monkeypatch.setenv("WORLDSSM_STEP_PATH", "layer")
    # IEEE float32 products on both sides, so "equal within rounding" holds on a GPU too; the
    # default TF32 products have their own test below.
    monkeypatch.setenv("WORLDSSM_TF32", "0")
BOX_OBS = {"type": "box", "shape": [7], "dtype": "float32", "low": -1, "high": 1}


def models(action_space, mlp_layers=1, backbone_dtype=torch.float32, classes=None):
    cfg = preset("DEBUG")
    cfg = dataclasses.replace(cfg, mlp_layers=mlp_layers, backbone=dataclasses.replace(cfg.backbone, kernels="triton"),
                              latent_classes=classes or cfg.latent_classes)
    torch.manual_seed(0)
    tri = WorldModel(cfg, BOX_OBS, action_space)
    with torch.no_grad():
        for p in tri.parameters():  # the reward head starts at zero: give every weight a value
            p.add_(torch.randn_like(p) * 0.2)
        tri.set_obs_stats(torch.randn(7) * 0.1, torch.rand(7) + 0.5)
    ref = WorldModel(dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, kernels="reference")),
                     BOX_OBS, action_space)
    ref.load_state_dict(tri.state_dict())
    for m in (tri, ref):
        m.to(DEV).eval()
        m.backbone.to(backbone_dtype)
    return tri, ref


def actions(space, b, g):
    if space["type"] == "discrete":
        return torch.randint(0, space["n"], (b,), generator=g).to(DEV)
    return (torch.rand(b, 2, generator=g) * 4 - 2).to(DEV)


def compare(pt, pr, tol, dtype, t):
    # Both paths carry the prior's probabilities (the next latent) beside its log-probabilities.
    assert pt.prior_probs is not None and pr.prior_probs is not None
    close(pt.prior_probs, pt.prior_logp.exp(), 1e-5)
    for name in ("prior_logp", "reward", "cont", "h", "cont_logit", "prior_probs"):
        a, b = getattr(pt, name), getattr(pr, name)
        if name == "reward" and dtype == torch.bfloat16:
            # h differs by about 1% (flipped bf16 roundings); the reward's symexp multiplies that
            # by up to its own size (3.7% at a reward of 17.8): compare on the head's symlog scale.
            a, b = symlog(a), symlog(b)
        close(a, b, tol, f"step {t} {name}")


def close(a, b, tol, what=""):
    assert not torch.isnan(a).any(), f"NaN in {what}: an unwritten element?"
    torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol, msg=lambda m: f"{what}: {m}")


# Steps of observe + imagine per case: the second reads the state the first left (each costs
# seconds to tens of seconds of the interpreter in CI).
STEPS = 2
BOX2 = {"type": "box", "shape": [2], "low": [-1, -1], "high": [1, 1], "dtype": "float32"}


# Up to SMALL_ROWS agents (16 here) the fused MLP layers multiply by broadcast product, above it by tl.dot.
# "mega": the backbone in one launch (kernels/step/mega.py) inside the fused step.
@pytest.mark.parametrize("space,mlp_layers,dtype,b,path", [
    ({"type": "discrete", "n": 3}, 1, torch.float32, 5, "layer"),
    (BOX2, 2, torch.float32, 5, "layer"),
    ({"type": "discrete", "n": 5}, 2, torch.bfloat16, 5, "layer"),
    (BOX2, 2, torch.float32, 3, "layer"),
    ({"type": "discrete", "n": 3}, 2, torch.float32, 24, "layer"),
    (BOX2, 2, torch.float32, 6, "mega"),
    ({"type": "discrete", "n": 5}, 2, torch.bfloat16, 5, "mega"),
    # Many rows (kernels/mlp/rows.py; ROWS_FROM lowered): whole input rows per program.
    ({"type": "discrete", "n": 3}, 2, torch.float32, 24, "rows"),
    (BOX2, 1, torch.float32, 24, "rows"),
    # Many more rows (TILES_FROM and TILE_PLAN lowered): 2D tiles, four latent variables of 4
    # classes per tile of the encoder's and the prior's softmax.
    ({"type": "discrete", "n": 3}, 2, torch.float32, 24, "tiles"),
    (BOX2, 1, torch.float32, 32, "tiles"),
    # Tiles of 32 columns: a hidden layer's tile is its whole row (DEBUG's width), so each
    # leaves the next LayerNorm's statistics (ln_stats_buffer) and the next reads them.
    ({"type": "discrete", "n": 3}, 2, torch.float32, 24, "tiles32"),
])
def test_fused_observe_and_imagine_equal_the_module_path(space, mlp_layers, dtype, b, path, monkeypatch):
    import worldssm.kernels.mlp.triton as mlp

    # The products switch from the broadcast form to tl.dot above SMALL_ROWS rows: lowered, so
    # the 24- and 32-row cases take tl.dot at a third of the interpreter's time of 70 rows.
    monkeypatch.setattr(mlp, "SMALL_ROWS", 16)
    launched = None
    classes = None
    stats = []
    if path.startswith("tiles"):
        monkeypatch.setattr(mlp, "TILES_FROM", 16)
        small = dict(block_m=16, block_n=32 if path == "tiles32" else 16, block_k=16, warps=4, stages=2)
        real_buffer = mlp.ln_stats_buffer
        monkeypatch.setattr(mlp, "ln_stats_buffer", lambda *a: stats.append(real_buffer(*a)) or stats[-1])
        monkeypatch.setattr(mlp, "TILE_PLAN", small)
        monkeypatch.setattr(mlp, "HEADS_TILE_PLAN", small)
        path, classes, launched = "layer", 4, []
        real_plan = mlp._tile_plan
        monkeypatch.setattr(mlp, "_tile_plan", lambda *a: launched.append((a, real_plan(*a))) or launched[-1][1])
    if path == "rows":
        monkeypatch.setattr(mlp, "ROWS_FROM", 16)
        path = "layer"
        launched = []
        for name in ("_rows_linear", "_rows_heads"):
            real_launch = getattr(mlp, name)
            monkeypatch.setattr(mlp, name, lambda *a, _f=real_launch, _n=name, **k: launched.append(_n) or _f(*a, **k))
    monkeypatch.setenv("WORLDSSM_STEP_PATH", path)
    tri, ref = models(space, mlp_layers, dtype, classes)
    assert fused.why_not_fused(tri, False, b) is None
    assert fused.why_not_fused(ref, False, b) is not None
    if dtype == torch.bfloat16:
        # The reference and Triton backbones round bfloat16 differently (about 2% on h): compare
        # with the module path over the same backbone kernels instead.
        ref = models(space, mlp_layers, dtype, classes)[0]
        monkeypatch.setattr(ref, "_fused_off", True, raising=False)
        real = fused.why_not_fused
        monkeypatch.setattr(fused, "why_not_fused", lambda wm, *a: "off" if getattr(wm, "_fused_off", False) else real(wm, *a))
    slab_t = {k: v.normal_() for k, v in tri.initial_state(b + 3).items()}
    slab_r = {k: v.clone() for k, v in slab_t.items()}
    slots = torch.randperm(b + 3, generator=torch.Generator().manual_seed(b))[:b].to(DEV)
    g = torch.Generator().manual_seed(1)
    tol = 5e-2 if dtype == torch.bfloat16 else 1e-4  # bf16: one flipped rounding of the input moves h ~1%
    with torch.no_grad():
        for t in range(STEPS):
            obs = torch.randn(b, 7, generator=g).to(DEV)
            a = actions(space, b, g)
            reset = (torch.arange(b) % 3 == t).to(DEV)
            pt = tri.observe_slots(slab_t, slots, obs, a, reset)
            pr = ref.observe_slots(slab_r, slots, obs, a, reset)
            compare(pt, pr, tol, dtype, t)
            z = tri.latent(pr.prior_logp)
            a = actions(space, b, g)
            pt = tri.imagine_slots(slab_t, slots, z, a)
            pr = ref.imagine_slots(slab_r, slots, z, a)
            compare(pt, pr, tol, dtype, t)
    for k in slab_r:
        close(slab_t[k], slab_r[k], tol)
    if classes is not None:  # every layer planned as tiles; the softmax tiles held 4 variables each
        many = [p["tile"] for (_, n, _, fixed, _), p in launched if fixed == classes]
        assert many and set(many) == {16}, launched
        # An observe plans 2 * mlp_layers + 5 layers (encoder, input, heads' hidden, 3 in heads_out),
        # an imagine mlp_layers + 4; STEPS of each.
        assert len(launched) == STEPS * (3 * mlp_layers + 9), len(launched)
        # With 32-column tiles every hidden layer leaves its statistics: the encoder's and the
        # heads' first and middle layers (mlp_layers each) of each observe, the heads' of each imagine.
        left = [st for st in stats if st is not None]
        assert len(left) == (STEPS * 3 * mlp_layers if small["block_n"] == 32 else 0), (len(left), len(stats))
        assert all(torch.isfinite(st).all() for st in left)
    elif launched is not None:  # every layer ran as rows: encoder, input and heads, in each observe and imagine
        assert launched.count("_rows_heads") == 2 * STEPS and launched.count("_rows_linear") == 3 * STEPS * (mlp_layers + 1)


@pytest.mark.parametrize("mlp_layers,b,plan", [(1, 5, "broadcast"), (2, 24, "rows"), (2, 24, "tiles")])
def test_the_fused_decoder_equals_the_module_path(mlp_layers, b, plan, monkeypatch):
    """`WorldModel.decode` of [B, V*K] latents runs the decoder's MLP in fused launches
    (`fused.decode_mlp`) where the fused step serves, and equals the module path's decoder; other
    shapes (an open-loop rollout's [B, T, ...]) take the module path."""
    import worldssm.kernels.mlp.triton as mlp

    monkeypatch.setattr(mlp, "SMALL_ROWS", 16)
    if plan == "rows":
        monkeypatch.setattr(mlp, "ROWS_FROM", 16)
    if plan == "tiles":
        monkeypatch.setattr(mlp, "TILES_FROM", 16)
        small = dict(block_m=16, block_n=32, block_k=16, warps=4, stages=2)
        monkeypatch.setattr(mlp, "TILE_PLAN", small)
        monkeypatch.setattr(mlp, "HEADS_TILE_PLAN", small)
    tri, ref = models({"type": "discrete", "n": 3}, mlp_layers)
    calls = []
    real = fused.decode_mlp
    monkeypatch.setattr(fused, "decode_mlp", lambda *a: calls.append(a[1].shape) or real(*a))
    cfg = tri.cfg
    g = torch.Generator().manual_seed(b)
    z = torch.softmax(torch.randn(b, cfg.latent_vars, cfg.latent_classes, generator=g), -1).flatten(1).to(DEV)
    h = torch.randn(b, cfg.backbone.d_model, generator=g).to(DEV)
    with torch.no_grad():
        got, want = tri.decode(z, h), ref.decode(z, h)
        assert got.shape == want.shape == (b, 7)
        close(got, want, 1e-4, "decoded observation")
        assert calls == [(b, cfg.latent_vars * cfg.latent_classes)]
        close(tri.decode(z[None], h[None])[0], want, 1e-4, "module path")
    assert len(calls) == 1


@pytest.mark.parametrize("path", ["v1", "split"])
def test_the_fused_heads_take_the_residual_of_the_cublas_paths(path, monkeypatch):
    """`residual_fused` on the v1 and split paths returns the residual before the final norm, so the
    fused encoder and heads run over those backbones too (the split path's, above 1,024 agents by
    default): the step still equals the module path."""
    monkeypatch.setenv("WORLDSSM_STEP_PATH", path)
    space = {"type": "discrete", "n": 3}
    tri, ref = models(space, 2)
    assert fused.why_not_fused(tri, False, 20) is None
    calls = []
    step = fused._step
    monkeypatch.setattr(fused, "_step", lambda *a: calls.append(1) or step(*a))
    b = 20
    slab_t = {k: v.normal_() for k, v in tri.initial_state(b + 3).items()}
    slab_r = {k: v.clone() for k, v in slab_t.items()}
    slots = torch.randperm(b + 3, generator=torch.Generator().manual_seed(2))[:b].to(DEV)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in range(2):
            obs, a = torch.randn(b, 7, generator=g).to(DEV), actions(space, b, g)
            reset = (torch.arange(b) % 3 == t).to(DEV)
            compare(tri.observe_slots(slab_t, slots, obs, a, reset), ref.observe_slots(slab_r, slots, obs, a, reset),
                    1e-4, torch.float32, t)
    assert calls == [1, 1]
    for k in slab_r:
        close(slab_t[k], slab_r[k], 1e-4, k)


def test_sampling_takes_the_module_path(monkeypatch):
    tri, _ = models({"type": "discrete", "n": 3})
    assert "sampled" in fused.why_not_fused(tri, True, 2)
    calls = []
    real = fused.observe
    monkeypatch.setattr(fused, "observe", lambda *a: calls.append(1) or real(*a))
    slab = tri.initial_state(2)
    slots, reset = torch.tensor([0, 1], device=DEV), torch.tensor([False, False], device=DEV)
    obs, act = torch.zeros(2, 7, device=DEV), torch.tensor([0, 2], device=DEV)
    with torch.no_grad():
        # The engine passes its generator on every call: without sampling it does not matter.
        tri.observe_slots(slab, slots, obs, act, reset, generator=torch.Generator(device=DEV))
        assert calls == [1]
        tri.observe_slots(slab, slots, obs, act, reset, sample=True, generator=torch.Generator(device=DEV))
        assert calls == [1]


@pytest.mark.parametrize("rows", [False, True])
def test_two_hot_reward_over_many_column_chunks_equals_torch(rows, monkeypatch):
    import worldssm.kernels.mlp.triton as mlp
    from worldssm.kernels.mlp.triton import EPI_TWOHOT, fused_linear
    from worldssm.model.nets import TwoHot

    if rows:  # one program walks every bin with a running softmax (kernels/mlp/rows.py)
        monkeypatch.setattr(mlp, "ROWS_FROM", 1)
        fused_linear = functools.partial(fused_linear, dot=True)
    g = torch.Generator().manual_seed(2)
    x, w, b = (torch.randn(*s, generator=g).to(DEV) for s in ((3 if not rows else 40, 20), (255, 20), (255,)))
    twohot = TwoHot(255, 20.0).to(DEV)
    got, _ = fused_linear(x, [w * 0.5], [b], epi=EPI_TWOHOT, bins=twohot.bins)
    torch.testing.assert_close(got, twohot.mean(x @ (w * 0.5).T + b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("path,tf32,batch,why_not", [
    ("v1", "1", 1, None), ("split", "1", 1, None), ("auto", "1", 64, None), ("auto", "1", 65, None),
    ("auto", "1", 1024, None), ("auto", "1", 1025, None), ("auto", "1", 16384, None), ("auto", "0", 64, None),
    ("auto", "0", 65, "above FUSED_MAX_BATCH_IEEE (WORLDSSM_TF32=0)=64"), ("layer", "0", 1000, None),
    ("split", "0", 100, "above FUSED_MAX_BATCH_IEEE"), ("v1", "0", 65, "above FUSED_MAX_BATCH_IEEE"),
    ("mega", "1", 1, None), ("mega", "1", 17, None)])
def test_the_fused_step_serves_every_batch_with_tf32(monkeypatch, path, tf32, batch, why_not):
    """By default ("auto") the whole step is fused at every batch with TF32 products, over the
    layer path's backbone or the split path's; with IEEE products (WORLDSSM_TF32=0) up to 64
    agents on every path but a forced "layer", above which the module heads' cuBLAS GEMMs serve
    (measured faster there)."""
    assert (fused.FUSED_MAX_BATCH, fused.FUSED_MAX_BATCH_IEEE) == (None, 64)
    tri, _ = models({"type": "discrete", "n": 3})
    monkeypatch.setenv("WORLDSSM_STEP_PATH", path)
    monkeypatch.setenv("WORLDSSM_TF32", tf32)
    why = fused.why_not_fused(tri, False, batch)
    if why_not is None:
        assert why is None
    else:
        assert why_not in why and str(batch) in why


def test_tf32_products_are_the_default_and_stay_near_ieee(monkeypatch):
    """WORLDSSM_TF32 picks the fused layers' dot precision (2: TF32, 1: IEEE, 0: the broadcast
    product of small batches) and a wrong value is named; the default TF32 step stays within 3%
    of the module path (the interpreter multiplies TF32 inputs exactly; a GPU rounds them)."""
    from worldssm.kernels.mlp.triton import _dot_mode

    monkeypatch.delenv("WORLDSSM_TF32")
    assert (_dot_mode(True), _dot_mode(False)) == (2, 0)
    monkeypatch.setenv("WORLDSSM_TF32", "0")
    assert (_dot_mode(True), _dot_mode(False)) == (1, 0)
    monkeypatch.setenv("WORLDSSM_TF32", "yes")
    with pytest.raises(ValueError, match="WORLDSSM_TF32 must be 0 or 1, got 'yes'"):
        _dot_mode(True)
    monkeypatch.delenv("WORLDSSM_TF32")
    tri, ref = models({"type": "discrete", "n": 3}, 2)
    b = 70  # above SMALL_ROWS: the layers multiply by tl.dot
    slab_t = {k: v.normal_() for k, v in tri.initial_state(b).items()}
    slab_r = {k: v.clone() for k, v in slab_t.items()}
    slots = torch.arange(b, device=DEV)
    g = torch.Generator().manual_seed(4)
    obs, a = torch.randn(b, 7, generator=g).to(DEV), actions({"type": "discrete", "n": 3}, b, g)
    reset = torch.zeros(b, dtype=torch.bool, device=DEV)
    with torch.no_grad():
        pt = tri.observe_slots(slab_t, slots, obs, a, reset)
        pr = ref.observe_slots(slab_r, slots, obs, a, reset)
    for name in ("prior_logp", "reward", "cont", "h", "cont_logit"):
        x, y = getattr(pt, name).float(), getattr(pr, name).float()
        rel = ((x - y).pow(2).mean() / y.pow(2).mean().clamp_min(1e-12)).sqrt().item()
        assert rel < 3e-2, f"{name}: relative RMS {rel:.4f} against the module path"  # H100, BASE: at most 0.015


def test_tf32_matmuls_is_scoped_and_only_on_cuda(monkeypatch):
    """The module path's TF32 switch sets torch's flag only inside the block, only for CUDA, only
    where WORLDSSM_TF32 allows, and restores what was there."""
    from worldssm.kernels import tf32_matmuls

    flag = torch.backends.cuda.matmul
    before = flag.allow_tf32
    try:
        flag.allow_tf32 = False
        monkeypatch.delenv("WORLDSSM_TF32", raising=False)
        with tf32_matmuls("cuda"):
            assert flag.allow_tf32 is True
        assert flag.allow_tf32 is False
        with tf32_matmuls("cpu"):
            assert flag.allow_tf32 is False
        monkeypatch.setenv("WORLDSSM_TF32", "0")
        with tf32_matmuls(torch.device("cuda", 0)):
            assert flag.allow_tf32 is False
    finally:
        flag.allow_tf32 = before


# One column chunk; three, the last partial; rows: whole rows per program (kernels/mlp/rows.py),
# or, wider than ROWS_MAX_KD, one tile of every output per program.
@pytest.mark.parametrize("kd,dot,rows", [(20, True, False), (150, True, False), (150, False, False),
                                         (20, True, True), (150, True, True), (300, True, True)])
def test_every_prologue_over_several_column_chunks_equals_torch(kd, dot, rows, monkeypatch):
    """fused_linear walks each input row 64 columns at a time (row statistics first for the
    norms): every prologue, grouped inputs and the stored prologue match torch at any width."""
    import torch.nn.functional as F

    import worldssm.kernels.mlp.triton as mlp

    if rows:
        monkeypatch.setattr(mlp, "ROWS_FROM", 16)
    from worldssm.kernels.mlp.triton import EPI_PROBS, EPI_TWOHOT, PRO_LN_SILU, PRO_NONE, PRO_RMS, PRO_SYMLOG
    from worldssm.kernels.mlp.triton import fused_linear as fused_linear_
    from worldssm.model.nets import TwoHot

    g = torch.Generator().manual_seed(3)

    def rnd(*s, scale=1.0):
        return (torch.randn(*s, generator=g) * scale).to(DEV)

    b, n = (37 if dot else 13), 70  # the broadcast product (4 rows a program) is the interpreter's slowest
    assert mlp._plan(b, n, kd, None, dot)["rows"] == (rows and kd <= 256)
    x = rnd(b, 2 * kd, scale=3.0)
    w = [rnd(n, kd, scale=kd ** -0.5) for _ in range(2)]
    bias = [rnd(n) for _ in range(2)]
    tol = dict(rtol=1e-4, atol=1e-4)
    fused_linear = functools.partial(fused_linear_, dot=dot)  # both ways of multiplying, at any batch
    got, _ = fused_linear(x[:, :kd], w[:1], bias[:1], pro=PRO_NONE)
    torch.testing.assert_close(got, F.linear(x[:, :kd], w[0], bias[0]), **tol)
    loc, scale = rnd(kd), rnd(kd).abs() + 0.5
    got, _ = fused_linear(x[:, :kd], w[:1], bias[:1], pro=PRO_SYMLOG, pro_a=loc, pro_b=scale)
    v = (x[:, :kd] - loc) / scale
    torch.testing.assert_close(got, F.linear(torch.sign(v) * torch.log1p(v.abs()), w[0], bias[0]), **tol)
    gam, bet = [rnd(kd) for _ in range(2)], [rnd(kd) for _ in range(2)]
    got, _ = fused_linear(x, w, bias, pro=PRO_LN_SILU, ln=(gam, bet), grouped_input=True, eps=1e-3)
    want = [F.linear(F.silu(F.layer_norm(x[:, i * kd:(i + 1) * kd], (kd,), gam[i], bet[i], 1e-3)), w[i], bias[i])
            for i in range(2)]
    torch.testing.assert_close(got, torch.cat(want, dim=1), **tol)
    rw = rnd(kd)
    got, normed = fused_linear(x[:, :kd], w, bias, pro=PRO_RMS, pro_a=rw, store_pro=True, eps=1e-5)
    h = x[:, :kd] * torch.rsqrt(x[:, :kd].pow(2).mean(-1, keepdim=True) + 1e-5) * rw
    torch.testing.assert_close(normed, h, **tol)
    torch.testing.assert_close(got, torch.cat([F.linear(h, w[i], bias[i]) for i in range(2)], dim=1), **tol)
    probs, _ = fused_linear(x[:, :kd], w[:1], [None], epi=EPI_PROBS, classes=7, unimix=0.01)
    want = 0.99 * F.linear(x[:, :kd], w[0]).view(b, 10, 7).softmax(-1) + 0.01 / 7
    torch.testing.assert_close(probs, want.reshape(b, n), **tol)
    twohot = TwoHot(255, 20.0).to(DEV)
    wr, br = rnd(255, kd, scale=0.5 * kd ** -0.5), rnd(255)
    got, _ = fused_linear(x[:, :kd], [wr], [br], pro=PRO_LN_SILU, ln=([gam[0]], [bet[0]]), epi=EPI_TWOHOT,
                          bins=twohot.bins, eps=1e-3)
    hidden = F.silu(F.layer_norm(x[:, :kd], (kd,), gam[0], bet[0], 1e-3))
    torch.testing.assert_close(got, twohot.mean(F.linear(hidden, wr, br)), **tol)
    # The bins are split over column tiles; the last tile of each row block to arrive reads every
    # tile's logits back and leaves the arrival counter at 0 for the next launch.
    from worldssm.kernels.step.triton import _counters

    assert int(_counters(x.device, b, "mlp")[:b].abs().sum()) == 0


@pytest.mark.parametrize("n,cap,tile", [(32, 16, 16), (48, 32, 16), (24, 16, 4), (8, 16, 4), (20, 16, 4)])
def test_several_latent_variables_per_tile_equal_torch(n, cap, tile, monkeypatch):
    """From TILES_FROM rows a softmax tile holds as many variables of 4 classes as divide n in a
    power-of-two tile of at least 16 columns and at most the plan's block_n (32 -> two tiles of 4
    variables, 48 -> three; 24, 8 or 20 -> one variable per tile); the unimix probabilities equal
    torch's."""
    import worldssm.kernels.mlp.triton as mlp
    from worldssm.kernels.mlp.triton import EPI_PROBS, fused_linear
    from worldssm.model.nets import unimix_probs

    monkeypatch.setattr(mlp, "TILES_FROM", 16)
    monkeypatch.setattr(mlp, "TILE_PLAN", dict(block_m=16, block_n=cap, block_k=16, warps=4, stages=2))
    plans = []
    real = mlp._tile_plan
    monkeypatch.setattr(mlp, "_tile_plan", lambda *a: plans.append(real(*a)) or plans[-1])
    g = torch.Generator().manual_seed(n)
    x, w, b = (torch.randn(*s, generator=g).to(DEV) for s in ((20, 12), (n, 12), (n,)))
    got, _ = fused_linear(x, [w], [b], epi=EPI_PROBS, classes=4, unimix=0.01, dot=True)
    assert [p["tile"] for p in plans] == [tile]
    want = unimix_probs((x @ w.T + b).view(20, n // 4, 4), 0.01).view(20, n)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_layernorm_statistics_are_refused_where_the_plan_cannot_give_or_take_them(monkeypatch):
    """stats_out needs one tile per group's row and no epilogue; stats_in needs the LayerNorm
    prologue and a [B, G, 2] float32 buffer; below TILES_FROM rows `ln_stats_buffer` offers none.
    Each refusal comes before any launch and names what is wrong."""
    import worldssm.kernels.mlp.triton as mlp
    from worldssm.kernels.mlp.triton import EPI_PROBS, PRO_LN_SILU, fused_linear, ln_stats_buffer

    monkeypatch.setattr(mlp, "TILES_FROM", 16)
    monkeypatch.setattr(mlp, "TILE_PLAN", dict(block_m=16, block_n=16, block_k=16, warps=4, stages=2))
    assert ln_stats_buffer(15, 16, 1, DEV) is None and ln_stats_buffer(20, 32, 1, DEV) is None
    st = ln_stats_buffer(20, 16, 1, DEV)
    assert st.shape == (20, 1, 2) and st.dtype == torch.float32
    x, w, b = torch.randn(20, 12, device=DEV), torch.randn(32, 12, device=DEV), torch.randn(32, device=DEV)
    ln = ([torch.ones(12, device=DEV)], [torch.zeros(12, device=DEV)])
    with pytest.raises(ValueError, match="one float32 tile per group's row"):
        fused_linear(x, [w], [b], stats_out=st, dot=True)  # 32 outputs in tiles of 16
    with pytest.raises(ValueError, match="one float32 tile per group's row"):
        fused_linear(x, [w[:16]], [b[:16]], epi=EPI_PROBS, classes=4, stats_out=st, dot=True)
    with pytest.raises(ValueError, match="needs pro=PRO_LN_SILU"):
        fused_linear(x, [w[:16]], [b[:16]], stats_in=st, dot=True)
    with pytest.raises(ValueError, match=r"stats_in must be a contiguous float32 \[20, 1, 2\]"):
        fused_linear(x, [w[:16]], [b[:16]], pro=PRO_LN_SILU, ln=ln, stats_in=st[:10], dot=True)
