"""Causal conv with a carried state: splitting time gives the same result; resets cut history."""

import torch

from worldssm.kernels.conv.ref import causal_conv_ref


def test_split_in_time_equals_whole():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 30, 5, generator=g, dtype=torch.float64)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64)
    bias = torch.randn(5, generator=g, dtype=torch.float64)
    resets = torch.rand(2, 30, generator=g) < 0.1
    y, s = causal_conv_ref(x, w, bias, None, resets)
    y1, s1 = causal_conv_ref(x[:, :11], w, bias, None, resets[:, :11])
    y2, s2 = causal_conv_ref(x[:, 11:], w, bias, s1, resets[:, 11:])
    torch.testing.assert_close(torch.cat([y1, y2], 1), y)
    torch.testing.assert_close(s2, s)


def test_matches_conv1d_without_resets():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 17, 6, generator=g, dtype=torch.float64)
    w = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y, _ = causal_conv_ref(x, w, None, None, None, activation=False)
    expect = torch.nn.functional.conv1d(
        torch.nn.functional.pad(x.transpose(1, 2), (3, 0)), w[:, None, :], groups=6
    ).transpose(1, 2)
    torch.testing.assert_close(y, expect)


def test_reset_cuts_history():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 12, 4, generator=g, dtype=torch.float64)
    w = torch.randn(4, 4, generator=g, dtype=torch.float64)
    state = torch.randn(1, 3, 4, generator=g, dtype=torch.float64)
    resets = torch.zeros(1, 12, dtype=torch.bool)
    resets[0, 6] = True
    y, _ = causal_conv_ref(x, w, None, state, resets)
    y_fresh, _ = causal_conv_ref(x[:, 6:], w, None, None, None)
    torch.testing.assert_close(y[:, 6:], y_fresh)
