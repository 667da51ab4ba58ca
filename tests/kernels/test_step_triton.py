"""The fused Triton step against the reference step: outputs, states, slots, resets, bf16 storage.

Small odd shapes run everywhere (CPU: Triton interpreter); `gpu` tests use larger shapes.
"""


import pytest
import torch

from tests.kernels.triton_here import CUDA, require_triton

DEV = require_triton()

from worldssm.kernels.scan.triton import ssd_scan_triton  # noqa: E402
from worldssm.kernels.step import get_step  # noqa: E402
from worldssm.kernels.step.ref import mamba2_sequence_ref, mamba2_step_ref  # noqa: E402
from worldssm.kernels.step.split import mamba2_step_split  # noqa: E402
from worldssm.kernels.step.triton import mamba2_step_triton  # noqa: E402

pytestmark = pytest.mark.usefixtures("poison")
# Both Triton steps keep the reference's contract: v1's one kernel (with its row counter) and the
# split path's two launches (B/C conv first, then the state pass with the x conv).
STEPS = pytest.mark.parametrize("step", [mamba2_step_triton, mamba2_step_split], ids=["v1", "split"])
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

# (rtol, atol) by the dtype that limits precision: float32 arithmetic against a float64
# reference; bfloat16 where the SSM state is stored or the output is returned in bfloat16.
# The gated norm divides by a head's RMS: where that is small, float32 rounding of y (a sum with
# cancellation) is magnified, so atol is 1e-4 (seen: 9e-5 once in 2.2M elements, P=16).
TOL = {
    torch.float32: dict(rtol=2e-4, atol=1e-4),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
}


def close(actual, expected, dtype, what):
    assert not torch.isnan(actual).any(), f"{what}: NaN (an unwritten element?)"
    torch.testing.assert_close(actual.double(), expected.double(), **TOL[dtype], msg=lambda m: f"{what}: {m}")


def make(h, p, n, k, b, s, seed=0, dtype=torch.float32, ssm_dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    cd = h * p + 2 * n
    kw = dict(
        conv_weight=torch.randn(cd, k, generator=g) * 0.5,
        conv_bias=torch.randn(cd, generator=g) * 0.1,
        dt_bias=torch.randn(h, generator=g) - 1,
        A=-torch.rand(h, generator=g) * 2 - 0.1,
        D=torch.randn(h, generator=g),
        norm_weight=torch.rand(h * p, generator=g) + 0.5,
    )
    kw = {key: v.to(DEV) for key, v in kw.items()}
    kw.update(n_heads=h, head_dim=p, d_state=n)
    zx = torch.randn(b, 2 * h * p + 2 * n + h, generator=g).to(DEV, dtype)
    conv = torch.randn(s, k - 1, cd, generator=g).to(DEV)
    ssm = torch.randn(s, h, p, n, generator=g).to(DEV, ssm_dtype)
    slots = torch.randperm(s, generator=g)[:b].to(DEV)
    reset = (torch.rand(b, generator=g) < 0.3).to(DEV)
    return zx, conv, ssm, slots, reset, kw


def f64(kw):
    return {k: (v.double() if torch.is_tensor(v) else v) for k, v in kw.items()}


@pytest.mark.parametrize("h,p,n,k", [(3, 5, 4, 4), (1, 8, 3, 2), (2, 16, 16, 3)])
@STEPS
def test_step_matches_reference_and_leaves_other_slots_alone(h, p, n, k, step):
    b, s = 4, 9
    zx, conv, ssm, slots, reset, kw = make(h, p, n, k, b, s)
    conv_ref, ssm_ref = conv.double(), ssm.double()
    y_ref = mamba2_step_ref(zx.double(), conv_ref, ssm_ref, slots, reset, **f64(kw))
    before = conv.clone(), ssm.clone()
    y = step(zx, conv, ssm, slots, reset, **kw)
    close(y, y_ref, torch.float32, "y")
    close(conv, conv_ref, torch.float32, "conv state")
    close(ssm, ssm_ref, torch.float32, "ssm state")
    others = torch.ones(s, dtype=torch.bool, device=DEV)
    others[slots] = False
    assert torch.equal(conv[others], before[0][others]), "a slot outside `slots` changed"
    assert torch.equal(ssm[others], before[1][others]), "a slot outside `slots` changed"


def launch(zx, conv, ssm, slots, reset, kw, **variant):
    """The private launcher with explicit launch arguments, as tests/bench/tune_step.py calls it."""
    import worldssm.kernels.step.triton as st

    args = {k: v for k, v in kw.items() if k not in ("n_heads", "head_dim", "d_state")}
    y, _ = st._launch(zx, conv, ssm, slots, reset, **args, h=kw["n_heads"], p=kw["head_dim"], n=kw["d_state"],
                      eps=1e-5, **variant)
    return y


@pytest.mark.parametrize("variant", [
    dict(heads_per_program=1), dict(heads_per_program=2), dict(heads_per_program=4),
    dict(heads_per_program=2, stream_state=True), dict(heads_per_program=1, num_warps=2),
    dict(heads_per_program=1, max_regs=96),
])
def test_launch_variants_match_reference(variant):
    """Every launch variant tune_step.py times, with 1, 2 and 4 programs sharing a row's B/C conv shift."""
    import worldssm.kernels.step.triton as st

    h, p, n, k, b, s = 4, 8, 5, 4, 5, 8
    zx, conv, ssm, slots, reset, kw = make(h, p, n, k, b, s, seed=12)
    conv_ref, ssm_ref = conv.double(), ssm.double()
    y_ref = mamba2_step_ref(zx.double(), conv_ref, ssm_ref, slots, reset, **f64(kw))
    y = launch(zx, conv, ssm, slots, reset, kw, **variant)
    close(y, y_ref, torch.float32, "y")
    close(conv, conv_ref, torch.float32, "conv state")
    close(ssm, ssm_ref, torch.float32, "ssm state")
    # the counters are left at zero for the next launch
    assert int(st._counters(zx.device, b)[:b].abs().sum()) == 0


@pytest.mark.parametrize("hb", [3, 8])
def test_heads_per_program_must_divide_heads(hb):
    zx, conv, ssm, slots, reset, kw = make(4, 8, 5, 4, 2, 3)
    with pytest.raises(ValueError, match="heads per program"):
        launch(zx, conv, ssm, slots, reset, kw, heads_per_program=hb)


@STEPS
def test_reset_zeroes_without_reading(step):
    zx, conv, ssm, slots, reset, kw = make(3, 5, 4, 4, 3, 5, seed=1)
    reset = torch.tensor([True, False, True], device=DEV)
    conv[slots[reset]] = float("nan")
    ssm[slots[reset]] = float("nan")
    conv_ref, ssm_ref = conv.double(), ssm.double()
    y_ref = mamba2_step_ref(zx.double(), conv_ref, ssm_ref, slots, reset, **f64(kw))
    y = step(zx, conv, ssm, slots, reset, **kw)
    assert torch.isfinite(ssm[slots]).all() and torch.isfinite(conv[slots]).all()
    close(y, y_ref, torch.float32, "y")
    close(ssm[slots], ssm_ref[slots], torch.float32, "ssm state")
    close(conv[slots], conv_ref[slots], torch.float32, "conv state")


@STEPS
def test_bf16_activations(step):
    zx, conv, ssm, slots, reset, kw = make(3, 5, 4, 4, 4, 6, seed=2, dtype=torch.bfloat16)
    conv_ref, ssm_ref = conv.double(), ssm.double()
    y_ref = mamba2_step_ref(zx.double(), conv_ref, ssm_ref, slots, reset, **f64(kw))
    y = step(zx, conv, ssm, slots, reset, **kw)
    assert y.dtype == torch.bfloat16
    close(y, y_ref, torch.bfloat16, "y (bf16 output)")
    close(ssm, ssm_ref, torch.float32, "ssm state")


def run_steps(step, zx, resets, conv, ssm, slots, kw):
    return torch.stack([step(zx[:, i], conv, ssm, slots, resets[:, i], **kw) for i in range(zx.shape[1])], 1)


@pytest.mark.parametrize("t", [9])
@pytest.mark.parametrize("h", [3, 4])  # a bfloat16 state takes 1 head per program at H=3, 4 at H=4
@STEPS
def test_bf16_state_storage_stays_within_tolerance(t, h, step):
    p, n, k, b, s = 5, 4, 4, 3, 5
    zx, conv, ssm, slots, _, kw = make(h, p, n, k, b, s, seed=3)
    g = torch.Generator().manual_seed(4)
    zxs = torch.randn(b, t, zx.shape[1], generator=g).to(DEV)
    resets = (torch.rand(b, t, generator=g) < 0.15).to(DEV)
    conv_ref, ssm_ref = conv.double(), ssm.double()
    y_ref = run_steps(mamba2_step_ref, zxs.double(), resets, conv_ref, ssm_ref, slots, f64(kw))
    ssm_bf = ssm.to(torch.bfloat16)
    y = run_steps(step, zxs, resets, conv, ssm_bf, slots, kw)
    assert ssm_bf.dtype == torch.bfloat16
    close(y, y_ref, torch.bfloat16, "y with bf16 state")
    close(ssm_bf[slots].float(), ssm_ref[slots], torch.bfloat16, "bf16 state")
    # The same bf16 storage in the reference: equal to within one bf16 rounding per step.
    ssm_rb = ssm.to(torch.bfloat16)
    conv_rb = conv.clone()
    conv_rb_k = conv.clone()
    ssm_kb = ssm.to(torch.bfloat16)
    run_steps(mamba2_step_ref, zxs, resets, conv_rb, ssm_rb, slots, kw)
    run_steps(step, zxs, resets, conv_rb_k, ssm_kb, slots, kw)
    close(ssm_kb.float(), ssm_rb.float(), torch.bfloat16, "bf16 state vs bf16 reference")


@pytest.mark.parametrize("step", [mamba2_step_ref, mamba2_step_triton, mamba2_step_split], ids=["ref", "v1", "split"])
def test_bf16_conv_storage_of_bf16_activations_loses_nothing(step):
    """A bfloat16 backbone's in-projection rows are bfloat16, and the conv state keeps past rows:
    stored in bfloat16 (`Mamba2Backbone.state_spec` with bfloat16 weights), every step gives
    bit for bit what a float32 conv state gives, over steps with resets."""
    h, p, n, k, b, t = 3, 5, 4, 4, 3, 5
    zx, conv, ssm, slots, _, kw = make(h, p, n, k, b, 6, seed=7)
    g = torch.Generator().manual_seed(8)
    zxs = torch.randn(b, t, zx.shape[1], generator=g).to(DEV, torch.bfloat16)
    resets = (torch.rand(b, t, generator=g) < 0.25).to(DEV)
    conv = conv.to(torch.bfloat16).float()  # a state that bfloat16 holds exactly
    conv_bf, ssm_bf = conv.to(torch.bfloat16), ssm.clone()
    y32 = run_steps(step, zxs, resets, conv, ssm, slots, kw)
    ybf = run_steps(step, zxs, resets, conv_bf, ssm_bf, slots, kw)
    assert conv_bf.dtype == torch.bfloat16
    assert torch.equal(ybf, y32)
    assert torch.equal(ssm_bf, ssm)
    assert torch.equal(conv_bf.float(), conv)
    # what the conv state keeps is the in-projection's x, B and C columns as they came
    assert torch.equal(conv_bf[slots, -1], zxs[:, -1, h * p:2 * h * p + 2 * n])


@pytest.mark.parametrize("t", [1, 13])
@STEPS
def test_kernel_steps_equal_kernel_scan(t, step):
    """T Triton steps through a slab equal one sequence pass with the Triton scan."""
    h, p, n, k, b = 3, 5, 4, 4, 3
    zx, conv, ssm, slots, _, kw = make(h, p, n, k, b, 7, seed=5)
    g = torch.Generator().manual_seed(6)
    zxs = torch.randn(b, t, zx.shape[1], generator=g).to(DEV)
    resets = (torch.rand(b, t, generator=g) < 0.15).to(DEV)
    conv0, ssm0 = conv[slots].clone(), ssm[slots].clone()
    y_seq, conv_f, ssm_f = mamba2_sequence_ref(zxs, conv0, ssm0, resets, scan=ssd_scan_triton, **kw)
    y = run_steps(step, zxs, resets, conv, ssm, slots, kw)
    close(y, y_seq, torch.float32, "y")
    close(conv[slots], conv_f, torch.float32, "conv state")
    close(ssm[slots], ssm_f, torch.float32, "ssm state")


@pytest.mark.parametrize("with_delta", [True, False])
def test_add_rmsnorm_matches_torch(with_delta):
    from worldssm.kernels.step.norm import add_rmsnorm_triton

    g = torch.Generator().manual_seed(11)
    x = torch.randn(37, 24, generator=g).to(DEV, torch.bfloat16)
    d = torch.randn(37, 24, generator=g).to(DEV, torch.bfloat16) if with_delta else None
    w = (torch.rand(24, generator=g) + 0.5).to(DEV, torch.bfloat16)
    s, out = add_rmsnorm_triton(x, d, w, 1e-5)
    s_ref = x + d if with_delta else x
    sf = s_ref.float()
    out_ref = (sf * torch.rsqrt(sf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(torch.bfloat16) * w
    if CUDA:
        assert torch.equal(s, s_ref)
    else:  # the interpreter truncates float32 -> bfloat16 instead of rounding to nearest
        close(s.float(), s_ref.float(), torch.bfloat16, "sum")
    close(out.float(), out_ref.float(), torch.bfloat16, "normed")


def test_get_step_picks_the_path():
    assert get_step("reference") is mamba2_step_ref
    assert get_step("triton") is mamba2_step_triton
    with pytest.raises(ValueError):
        get_step("auto")


@STEPS
def test_bad_shapes_are_errors(step):
    zx, conv, ssm, slots, reset, kw = make(3, 5, 4, 4, 2, 4)
    with pytest.raises(ValueError, match="ssm_state"):
        step(zx, conv, ssm[:, :2], slots, reset, **kw)
    with pytest.raises(ValueError, match="zxbcdt"):
        step(zx[:, :-1], conv, ssm, slots, reset, **kw)


# ---- GPU: the real shapes ---------------------------------------------------------------------


def check_base_shape(run, dtype, ssm_dtype):
    """run(zx, conv, ssm, slots, reset, kw) -> y at BASE's shape, 1,024 of 1,500 slots, against
    float64 arithmetic on the same storage dtypes (a bf16 slab stores the float64 result rounded)."""
    h, p, n, k, b, s = 8, 64, 64, 4, 1024, 1500
    zx, conv, ssm, slots, reset, kw = make(h, p, n, k, b, s, seed=7, dtype=dtype, ssm_dtype=ssm_dtype)
    conv_ref, ssm_ref = conv.double(), (ssm.double() if ssm_dtype == torch.float32 else ssm.clone())
    before = conv.clone(), ssm.clone()
    y_ref = mamba2_step_ref(zx.double(), conv_ref, ssm_ref, slots, reset, **f64(kw))
    y = run(zx, conv, ssm, slots, reset, kw)
    tol = torch.bfloat16 if torch.bfloat16 in (dtype, ssm_dtype) else torch.float32
    close(y.float(), y_ref.float(), tol, "y")
    close(conv, conv_ref, torch.float32, "conv state")
    close(ssm.float(), ssm_ref.float(), tol, "ssm state")
    others = torch.ones(s, dtype=torch.bool, device=DEV)
    others[slots] = False
    assert torch.equal(conv[others], before[0][others]) and torch.equal(ssm[others], before[1][others])


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("hb", [None, 1, 2, 8])
@pytest.mark.parametrize("ssm_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_base_shape(dtype, ssm_dtype, hb):
    check_base_shape(lambda *a: launch(*a, heads_per_program=hb), dtype, ssm_dtype)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("ssm_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_split_base_shape(dtype, ssm_dtype):
    check_base_shape(lambda zx, conv, ssm, slots, reset, kw: mamba2_step_split(zx, conv, ssm, slots, reset, **kw),
                     dtype, ssm_dtype)


@pytest.mark.gpu
@gpu
@STEPS
def test_gpu_more_rows_than_a_grid_axis_allows(step):
    """70,000 agents in one launch (mamba_ssm's batch-on-axis-1 grid stops at 65,535)."""
    h, p, n, k, b, s = 2, 16, 16, 4, 70_000, 70_003
    zx, conv, ssm, slots, reset, kw = make(h, p, n, k, b, s, seed=8)
    conv_ref, ssm_ref = conv.double(), ssm.double()
    y_ref = mamba2_step_ref(zx.double(), conv_ref, ssm_ref, slots, reset, **f64(kw))
    y = step(zx, conv, ssm, slots, reset, **kw)
    close(y, y_ref, torch.float32, "y")
    close(ssm, ssm_ref, torch.float32, "ssm state")
    close(conv, conv_ref, torch.float32, "conv state")


@pytest.mark.gpu
@gpu
@STEPS
def test_gpu_steps_equal_scan_base_shape(step):
    h, p, n, k, b, t = 8, 64, 64, 4, 16, 150
    zx, conv, ssm, slots, _, kw = make(h, p, n, k, b, 40, seed=9)
    g = torch.Generator().manual_seed(10)
    zxs = torch.randn(b, t, zx.shape[1], generator=g).to(DEV)
    resets = (torch.rand(b, t, generator=g) < 0.02).to(DEV)
    conv0, ssm0 = conv[slots].clone(), ssm[slots].clone()
    y_seq, conv_f, ssm_f = mamba2_sequence_ref(zxs, conv0, ssm0, resets, scan=ssd_scan_triton, **kw)
    y = run_steps(step, zxs, resets, conv, ssm, slots, kw)
    close(y, y_seq, torch.float32, "y")
    close(ssm[slots], ssm_f, torch.float32, "ssm state")
    close(conv[slots], conv_f, torch.float32, "conv state")
