"""Engine test fixtures: a trained DEBUG Pendulum checkpoint shared by the session."""

import pytest


@pytest.fixture(scope="session")
def pendulum_run(tmp_path_factory):
    """A run directory with a DEBUG model trained 2 steps on 300 Pendulum-v1 steps per agent."""
    from worldssm.data import collect
    from worldssm.train import Trainer
    from worldssm.train.config import TrainConfig

    root = tmp_path_factory.mktemp("engine_run")
    collect("Pendulum-v1", 2, 300, root / "data", seed=3)
    cfg = TrainConfig(preset="DEBUG", steps=2, batch_size=2, seq_len=16, log_every=2, checkpoint_every=2)
    Trainer(root / "data", root / "run", cfg).run(progress=False)
    return root / "run"
