"""T reference steps through a slot-indexed slab equal one sequence pass over T."""

import pytest
import torch

from worldssm.kernels.step.ref import mamba2_sequence_ref, mamba2_step_ref

H, P, N, K = 3, 5, 4, 4


def params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    cd = H * P + 2 * N
    return dict(
        conv_weight=torch.randn(cd, K, generator=g, dtype=dtype) * 0.5,
        conv_bias=torch.randn(cd, generator=g, dtype=dtype) * 0.1,
        dt_bias=torch.randn(H, generator=g, dtype=dtype) - 1,
        A=-torch.rand(H, generator=g, dtype=dtype) - 0.1,
        D=torch.randn(H, generator=g, dtype=dtype),
        norm_weight=torch.rand(H * P, generator=g, dtype=dtype) + 0.5,
        n_heads=H, head_dim=P, d_state=N,
    )


@pytest.mark.parametrize("t", [1, 9, 23])
def test_steps_equal_sequence(t):
    dtype = torch.float64
    kw = params(dtype)
    b, slots_total = 3, 7
    g = torch.Generator().manual_seed(5)
    zx = torch.randn(b, t, 2 * H * P + 2 * N + H, generator=g, dtype=dtype)
    resets = torch.rand(b, t, generator=g) < 0.15
    conv0 = torch.randn(b, K - 1, H * P + 2 * N, generator=g, dtype=dtype)
    ssm0 = torch.randn(b, H, P, N, generator=g, dtype=dtype)
    y_seq, conv_f, ssm_f = mamba2_sequence_ref(zx, conv0, ssm0, resets, chunk_size=4, **kw)

    conv_slab = torch.randn(slots_total, K - 1, H * P + 2 * N, dtype=dtype)
    ssm_slab = torch.randn(slots_total, H, P, N, dtype=dtype)
    slots = torch.tensor([5, 0, 3])
    conv_slab[slots], ssm_slab[slots] = conv0, ssm0
    untouched = [i for i in range(slots_total) if i not in slots.tolist()]
    before = conv_slab[untouched].clone(), ssm_slab[untouched].clone()
    ys = [mamba2_step_ref(zx[:, i], conv_slab, ssm_slab, slots, resets[:, i], **kw) for i in range(t)]
    torch.testing.assert_close(torch.stack(ys, 1), y_seq)
    torch.testing.assert_close(conv_slab[slots], conv_f)
    torch.testing.assert_close(ssm_slab[slots], ssm_f)
    assert torch.equal(conv_slab[untouched], before[0]) and torch.equal(ssm_slab[untouched], before[1])


def test_reset_does_not_read_state():
    kw = params(torch.float32)
    zx = torch.randn(2, 2 * H * P + 2 * N + H)
    conv = torch.full((2, K - 1, H * P + 2 * N), float("nan"))
    ssm = torch.full((2, H, P, N), float("nan"))
    y = mamba2_step_ref(zx, conv, ssm, torch.tensor([1, 0]), torch.tensor([True, True]), **kw)
    assert torch.isfinite(y).all() and torch.isfinite(ssm).all() and torch.isfinite(conv).all()
