"""GraphedStep: one CUDA graph per batch bucket; padded rows touch only the scratch slot."""

import pytest
import torch

from worldssm.kernels.graphs import GraphedStep

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def test_bucket_choice_and_limits():
    g = GraphedStep(lambda slots, reset: slots, (64, 1, 8), scratch_slot=0)
    assert [g.bucket_for(b) for b in (1, 2, 8, 9, 64)] == [1, 8, 8, 64, 64]
    with pytest.raises(ValueError, match="exceeds"):
        g.bucket_for(65)
    with pytest.raises(ValueError):
        GraphedStep(lambda s, r: s, (), scratch_slot=0)


@pytest.mark.skipif(CUDA, reason="checks the CPU error")
def test_capture_needs_cuda():
    g = GraphedStep(lambda slots, reset, x: x, (4,), scratch_slot=0)
    with pytest.raises(RuntimeError, match="CUDA"):
        g(torch.arange(2), torch.zeros(2, dtype=torch.bool), torch.randn(2, 3))


@pytest.mark.gpu
@gpu
def test_graphed_triton_step_equals_eager_and_pads_to_scratch():
    from worldssm.kernels.step.triton import mamba2_step_triton

    h, p, n, k, s = 8, 64, 64, 4, 300
    cd = h * p + 2 * n
    g = torch.Generator().manual_seed(0)
    kw = dict(
        conv_weight=torch.randn(cd, k, generator=g) * 0.5, conv_bias=torch.randn(cd, generator=g) * 0.1,
        dt_bias=torch.randn(h, generator=g) - 1, A=-torch.rand(h, generator=g) - 0.1,
        D=torch.randn(h, generator=g), norm_weight=torch.rand(h * p, generator=g) + 0.5,
    )
    kw = {key: v.cuda() for key, v in kw.items()}
    kw.update(n_heads=h, head_dim=p, d_state=n)
    conv = torch.randn(s, k - 1, cd, generator=g).cuda()
    ssm = torch.randn(s, h, p, n, generator=g).cuda()
    conv_e, ssm_e = conv.clone(), ssm.clone()
    scratch = s - 1

    def fn(slots, reset, zx):
        return mamba2_step_triton(zx, conv, ssm, slots, reset, **kw)

    graphed = GraphedStep(fn, (4, 64, 256), scratch_slot=scratch)
    for b in (3, 50, 64, 200, 1):
        slots = torch.randperm(s - 1, generator=g)[:b].cuda()
        reset = (torch.rand(b, generator=g) < 0.2).cuda()
        zx = torch.randn(b, 2 * h * p + 2 * n + h, generator=g).cuda()
        y = graphed(slots, reset, zx).clone()
        y_e = mamba2_step_triton(zx, conv_e, ssm_e, slots, reset, **kw)
        torch.testing.assert_close(y, y_e, rtol=0, atol=0)
        torch.testing.assert_close(ssm[:scratch], ssm_e[:scratch], rtol=0, atol=0)
        torch.testing.assert_close(conv[:scratch], conv_e[:scratch], rtol=0, atol=0)
    assert sorted(graphed.buckets) == [4, 64, 256]
