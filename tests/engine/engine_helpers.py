"""Spaces and tiny models shared by the engine tests."""

import numpy as np
import torch

from worldssm.model import WorldModel, preset

VEC_OBS = {"type": "box", "shape": [3], "dtype": "float32",
           "low": np.full(3, -8.0, np.float32), "high": np.full(3, 8.0, np.float32)}
BOX_ACT = {"type": "box", "shape": [1], "dtype": "float32",
           "low": np.array([-2.0], np.float32), "high": np.array([2.0], np.float32)}
DISC_ACT = {"type": "discrete", "n": 5}


def debug_model(obs_space=VEC_OBS, act_space=BOX_ACT, seed=0, state_dtype=None):
    import dataclasses

    cfg = preset("DEBUG")
    if state_dtype is not None:
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, state_dtype=state_dtype))
    torch.manual_seed(seed)
    return WorldModel(cfg, obs_space, act_space).eval()


def obs_actions(b, t, seed=0, act_space=BOX_ACT):
    rng = np.random.default_rng(seed)
    obs = (rng.standard_normal((t, b, 3)) * 2).astype(np.float32)
    if act_space["type"] == "discrete":
        act = rng.integers(0, act_space["n"], (t, b)).astype(np.int64)
    else:
        act = rng.uniform(-2, 2, (t, b, 1)).astype(np.float32)
    return obs, act
