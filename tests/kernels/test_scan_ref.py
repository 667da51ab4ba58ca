"""The chunked PyTorch scan equals the sequential specification, resets included."""

import pytest
import torch

from worldssm.kernels.scan.ref import ssd_scan_chunked, ssd_scan_sequential

TOL = {torch.float64: dict(rtol=1e-9, atol=1e-10), torch.float32: dict(rtol=2e-4, atol=2e-5)}


def make_inputs(b, t, h, p, n, dtype, reset_p=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, h, p, generator=g, dtype=dtype)
    dt = torch.nn.functional.softplus(torch.randn(b, t, h, generator=g, dtype=dtype) - 1.0)
    A = -torch.rand(h, generator=g, dtype=dtype) * 2 - 0.1
    B = torch.randn(b, t, n, generator=g, dtype=dtype)
    C = torch.randn(b, t, n, generator=g, dtype=dtype)
    D = torch.randn(h, generator=g, dtype=dtype)
    resets = torch.rand(b, t, generator=g) < reset_p
    init = torch.randn(b, h, p, n, generator=g, dtype=dtype)
    return x, dt, A, B, C, D, resets, init


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("t,chunk", [(1, 64), (63, 16), (200, 64), (37, 7)])
def test_chunked_equals_sequential(dtype, t, chunk):
    args = make_inputs(3, t, 3, 5, 7, dtype)
    y_seq, s_seq = ssd_scan_sequential(*args)
    y_chk, s_chk = ssd_scan_chunked(*args, chunk_size=chunk)
    assert torch.isfinite(y_chk).all()
    torch.testing.assert_close(y_chk, y_seq, **TOL[dtype])
    torch.testing.assert_close(s_chk, s_seq, **TOL[dtype])


def test_gradients_match_sequential():
    args = [a.clone().requires_grad_(a.is_floating_point()) for a in make_inputs(2, 45, 2, 3, 5, torch.float64)]
    y1, s1 = ssd_scan_sequential(*args)
    w1, w2 = torch.randn_like(y1), torch.randn_like(s1)
    g_seq = torch.autograd.grad((y1 * w1).sum() + (s1 * w2).sum(), [a for a in args if a.requires_grad])
    y2, s2 = ssd_scan_chunked(*args, chunk_size=16)
    g_chk = torch.autograd.grad((y2 * w1).sum() + (s2 * w2).sum(), [a for a in args if a.requires_grad])
    for a, b in zip(g_seq, g_chk):
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-9)


def test_reset_row_equals_fresh_start():
    x, dt, A, B, C, D, _, init = make_inputs(2, 50, 2, 4, 3, torch.float64)
    resets = torch.zeros(2, 50, dtype=torch.bool)
    resets[0, 20] = True
    y, _ = ssd_scan_chunked(x, dt, A, B, C, D, resets, init, chunk_size=16)
    y_fresh, _ = ssd_scan_sequential(x[:1, 20:], dt[:1, 20:], A, B[:1, 20:], C[:1, 20:], D)
    torch.testing.assert_close(y[0, 20:], y_fresh[0])
    # Before the reset the initial state matters, so the outputs differ from a zero start.
    y_zero, _ = ssd_scan_sequential(x[:1, :20], dt[:1, :20], A, B[:1, :20], C[:1, :20], D)
    assert not torch.allclose(y[0, :20], y_zero[0])


def test_reset_of_one_row_leaves_others_alone():
    x, dt, A, B, C, D, _, init = make_inputs(3, 40, 2, 4, 3, torch.float64)
    none = torch.zeros(3, 40, dtype=torch.bool)
    some = none.clone()
    some[1, [5, 17, 33]] = True
    y0, s0 = ssd_scan_chunked(x, dt, A, B, C, D, none, init, chunk_size=8)
    y1, s1 = ssd_scan_chunked(x, dt, A, B, C, D, some, init, chunk_size=8)
    torch.testing.assert_close(y1[[0, 2]], y0[[0, 2]], rtol=0, atol=0)
    torch.testing.assert_close(s1[[0, 2]], s0[[0, 2]], rtol=0, atol=0)
    assert not torch.allclose(y1[1, 5:], y0[1, 5:])
