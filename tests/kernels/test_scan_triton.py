"""The Triton chunked SSD scan against the sequential specification: outputs, final states, gradients.

Small odd shapes run everywhere (CPU: Triton interpreter); `gpu` tests use larger shapes.
"""


import pytest
import torch

from tests.kernels.triton_here import CUDA, require_triton

DEV = require_triton()

from worldssm.kernels.scan import get_scan  # noqa: E402
from worldssm.kernels.scan.ref import ssd_scan_chunked, ssd_scan_sequential  # noqa: E402
from worldssm.kernels.scan.triton import ssd_scan_triton  # noqa: E402

pytestmark = pytest.mark.usefixtures("poison")
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

# (rtol, atol) against a float64 reference, by input dtype. Gradients are sums over T and heads,
# so they are compared by relative RMS error (GRAD_RMS) instead of elementwise.
TOL = {
    torch.float32: dict(rtol=5e-4, atol=5e-5),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
}
GRAD_RMS = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def make(b, t, h, p, n, reset_p=0.05, seed=0, with_d=True, with_init=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, h, p, generator=g, dtype=torch.float64)
    dt = torch.nn.functional.softplus(torch.randn(b, t, h, generator=g, dtype=torch.float64) - 1.0)
    A = -torch.rand(h, generator=g, dtype=torch.float64) * 2 - 0.1
    B = torch.randn(b, t, n, generator=g, dtype=torch.float64)
    C = torch.randn(b, t, n, generator=g, dtype=torch.float64)
    D = torch.randn(h, generator=g, dtype=torch.float64) if with_d else None
    resets = torch.rand(b, t, generator=g) < reset_p
    init = torch.randn(b, h, p, n, generator=g, dtype=torch.float64) if with_init else None
    return [v.to(DEV) if v is not None else None for v in (x, dt, A, B, C, D, resets, init)]


def cast(args, dtype, grad=False):
    out = []
    for v in args:
        if v is not None and v.is_floating_point():
            v = v.detach().to(dtype).requires_grad_(grad)
        out.append(v)
    return out


def close(actual, expected, dtype, what):
    assert not torch.isnan(actual).any(), f"{what}: NaN (an unwritten element?)"
    torch.testing.assert_close(actual.double(), expected.double(), **TOL[dtype], msg=lambda m: f"{what}: {m}")


def rel_rms(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30)).item()


@pytest.mark.parametrize("b,t,h,p,n,chunk", [(2, 37, 3, 5, 7, 16), (3, 70, 2, 16, 16, 32), (1, 1, 1, 3, 2, 16)])
def test_forward_matches_sequential(b, t, h, p, n, chunk):
    args = make(b, t, h, p, n, reset_p=0.1)
    y_ref, s_ref = ssd_scan_sequential(*args)
    y, s = ssd_scan_triton(*cast(args, torch.float32), chunk_size=chunk)
    assert y.dtype == torch.float32 and s.dtype == torch.float32
    close(y, y_ref, torch.float32, "y")
    close(s, s_ref, torch.float32, "final state")


@pytest.mark.parametrize("with_d,with_init,reset_p", [(True, True, 0.1), (False, False, 0.0), (True, False, 0.3)])
def test_gradients_match_sequential(with_d, with_init, reset_p):
    args = make(2, 45, 3, 5, 7, reset_p=reset_p, seed=1, with_d=with_d, with_init=with_init)
    ref_args = cast(args, torch.float64, grad=True)
    y1, s1 = ssd_scan_sequential(*ref_args)
    w1, w2 = torch.randn_like(y1), torch.randn_like(s1)
    leaves = [a for a in ref_args if a is not None and a.requires_grad]
    g_ref = torch.autograd.grad((y1 * w1).sum() + (s1 * w2).sum(), leaves)
    tri_args = cast(args, torch.float32, grad=True)
    y2, s2 = ssd_scan_triton(*tri_args, chunk_size=16)
    leaves2 = [a for a in tri_args if a is not None and a.requires_grad]
    g_tri = torch.autograd.grad((y2 * w1.float()).sum() + (s2 * w2.float()).sum(), leaves2)
    names = [nm for nm, a in zip("x dt A B C D resets init".split(), ref_args) if a is not None and a.requires_grad]
    for name, a, b in zip(names, g_ref, g_tri):
        assert not torch.isnan(b).any(), f"d{name}: NaN"
        assert rel_rms(b, a) < GRAD_RMS[torch.float32], f"d{name}: relative RMS error {rel_rms(b, a):.2e}"


def test_equals_chunked_reference_and_get_scan():
    args = make(2, 50, 2, 4, 3, reset_p=0.1, seed=2)
    y_ref, s_ref = ssd_scan_chunked(*cast(args, torch.float32), chunk_size=16)
    y, s = get_scan("triton")(*cast(args, torch.float32))
    close(y, y_ref, torch.float32, "y")
    close(s, s_ref, torch.float32, "final state")
    assert get_scan("reference") is ssd_scan_chunked


def test_reset_of_one_row_leaves_others_alone():
    args = make(3, 40, 2, 4, 3, reset_p=0.0, seed=3)
    y0, s0 = ssd_scan_triton(*cast(args, torch.float32))
    args[6] = args[6].clone()
    args[6][1, [5, 17, 33]] = True
    y1, s1 = ssd_scan_triton(*cast(args, torch.float32))
    assert torch.equal(y1[[0, 2]], y0[[0, 2]]) and torch.equal(s1[[0, 2]], s0[[0, 2]])
    assert not torch.allclose(y1[1, 5:], y0[1, 5:])


def test_bf16_inputs():
    args = make(2, 33, 2, 8, 4, reset_p=0.1, seed=4)
    y_ref, s_ref = ssd_scan_sequential(*cast(cast(args, torch.bfloat16), torch.float64))
    y, s = ssd_scan_triton(*cast(args, torch.bfloat16))
    assert y.dtype == torch.bfloat16 and s.dtype == torch.float32
    close(y, y_ref, torch.bfloat16, "y")
    close(s, s_ref, torch.float32, "final state (fp32 arithmetic on the same bf16 inputs)")


def test_strided_inputs_from_a_split():
    """x, B and C as views of one in-projection, like the model passes them."""
    b, t, h, p, n = 2, 21, 2, 4, 3
    g = torch.Generator().manual_seed(5)
    xbc = torch.randn(b, t, h * p + 2 * n, generator=g).to(DEV)
    x, B, C = torch.split(xbc, [h * p, n, n], dim=-1)
    x = x.reshape(b, t, h, p)
    dt = torch.rand(b, t, h, generator=g).to(DEV) * 0.5
    A = -torch.rand(h, generator=g).to(DEV) - 0.1
    y_ref, s_ref = ssd_scan_sequential(x.double(), dt.double(), A.double(), B.double(), C.double())
    y, s = ssd_scan_triton(x, dt, A, B, C)
    close(y, y_ref, torch.float32, "y")
    close(s, s_ref, torch.float32, "final state")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("b,t", [(4, 300), (2, 1031)])
def test_gpu_base_shape_forward_and_gradients(b, t):
    h, p, n = 8, 64, 64
    args = make(b, t, h, p, n, reset_p=0.01, seed=6)
    ref_args = cast(args, torch.float64, grad=True)
    y1, s1 = ssd_scan_chunked(*ref_args, chunk_size=64)
    w1, w2 = torch.randn_like(y1), torch.randn_like(s1)
    leaves = [a for a in ref_args if a is not None and a.requires_grad]
    g_ref = torch.autograd.grad((y1 * w1).sum() + (s1 * w2).sum(), leaves)
    tri_args = cast(args, torch.float32, grad=True)
    y2, s2 = ssd_scan_triton(*tri_args)
    close(y2, y1, torch.float32, "y")
    close(s2, s1, torch.float32, "final state")
    leaves2 = [a for a in tri_args if a is not None and a.requires_grad]
    g_tri = torch.autograd.grad((y2 * w1.float()).sum() + (s2 * w2.float()).sum(), leaves2)
    for name, a, bb in zip("x dt A B C D init".split(), g_ref, g_tri):
        assert rel_rms(bb, a) < 1e-4, f"d{name}: relative RMS error {rel_rms(bb, a):.2e}"
