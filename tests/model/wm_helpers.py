"""Spaces, random batches and a scan spy shared by the model tests."""

import numpy as np
import torch


VEC_OBS = {"type": "box", "shape": [3], "dtype": "float32", "low": np.full(3, -8.0, np.float32), "high": np.full(3, 8.0, np.float32)}
IMG_OBS = {"type": "box", "shape": [16, 16, 3], "dtype": "uint8", "low": np.zeros((16, 16, 3), np.uint8), "high": np.full((16, 16, 3), 255, np.uint8)}
BOX_ACT = {"type": "box", "shape": [1], "dtype": "float32", "low": np.array([-2.0], np.float32), "high": np.array([2.0], np.float32)}
DISC_ACT = {"type": "discrete", "n": 5}


def random_batch(obs_space, act_space, b, t, seed=0, reset_p=0.08):
    g = torch.Generator().manual_seed(seed)
    if obs_space["dtype"] == "uint8":
        obs = torch.randint(0, 256, (b, t, *obs_space["shape"]), generator=g, dtype=torch.uint8)
    else:
        obs = torch.randn(b, t, *obs_space["shape"], generator=g) * 3
    if act_space["type"] == "discrete":
        action = torch.randint(0, act_space["n"], (b, t), generator=g)
    else:
        action = torch.rand(b, t, *act_space["shape"], generator=g) * 4 - 2
    is_first = torch.rand(b, t, generator=g) < reset_p
    is_first[:, 0] = True
    return {
        "obs": obs, "action": action, "reward": torch.randn(b, t, generator=g),
        "is_first": is_first, "is_terminal": torch.rand(b, t, generator=g) < 0.05,
    }


def record_chunk_sizes(monkeypatch, module, name: str) -> list:
    """Replace the scan `module.name` by a wrapper that records each call's `chunk_size`.

    The wrapper requires the keyword, so a caller that leaves it out (and gets the scan's own
    default) fails with a TypeError. Returns the list the calls append to.
    """
    real = getattr(module, name)
    seen = []

    def spy(*args, chunk_size, **kwargs):
        seen.append(chunk_size)
        return real(*args, chunk_size=chunk_size, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return seen


def randomise_parameters(model, seed=0):
    """Redraw every parameter of `model` in place, so that no array is zero or one by
    construction (the reward head's output layer starts at zero, norms at one): matrices from
    N(0, 1/fan_in) with fan_in their last dim, which keeps activations of order one, vectors
    from N(0, 0.5^2); and the observation statistics (location N(0, 1), scale in [0.2, 2.2]).
    Returns the model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            std = p.shape[-1] ** -0.5 if p.dim() > 1 else 0.5
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * std)
    if getattr(model, "normalises_obs", False):  # observation statistics away from 0 and 1 too
        n = model.obs_loc.numel()
        model.set_obs_stats(torch.randn(n, generator=g).numpy(), 0.2 + 2 * torch.rand(n, generator=g).numpy())
    return model
