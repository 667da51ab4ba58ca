import pytest


@pytest.fixture(scope="session")
def pendulum_data(tmp_path_factory):
    """Two Pendulum-v1 agents, 300 steps each: small but real rollouts."""
    from worldssm.data import collect

    out = tmp_path_factory.mktemp("pendulum")
    collect("Pendulum-v1", 2, 300, out, seed=3)
    return out
