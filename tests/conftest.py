"""Fixtures shared across test packages, and the `gpu` marker's skip.

A test marked `gpu` is skipped where torch sees no CUDA device (CI, the 2-core machine); on the
GPU machine `python3 -m pytest -m gpu` runs exactly those.
"""

import pytest


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pendulum_data(tmp_path_factory):
    """Two Pendulum-v1 agents, 300 ticks each: small but real rollouts."""
    from worldssm.data import collect

    out = tmp_path_factory.mktemp("pendulum")
    collect("Pendulum-v1", 2, 300, out, seed=3)
    return out


@pytest.fixture(scope="session")
def pendulum_run(pendulum_data, tmp_path_factory):
    """A run directory with a DEBUG model trained 2 steps on `pendulum_data`."""
    from worldssm.train import Trainer
    from worldssm.train.config import TrainConfig

    root = tmp_path_factory.mktemp("pendulum_run")
    cfg = TrainConfig(preset="DEBUG", steps=2, batch_size=2, seq_len=16, log_every=2, checkpoint_every=2)
    Trainer(pendulum_data, root / "run", cfg).run(progress=False)
    return root / "run"
