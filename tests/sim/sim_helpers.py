"""Models and engine snapshots shared by the simulation tests."""

from worldssm import codec
from worldssm.model import ModelSource
from worldssm.sim.messages import EngineSnapshot


def model_source(env="Pendulum-v1", **kwargs) -> ModelSource:
    """An untrained DEBUG model whose spaces match `env` (EngineActors build it from this)."""
    from worldssm.envs import make
    from worldssm.spaces import space_to_dict

    e = make(env, api="batched", **kwargs)
    try:
        return ModelSource.of_preset("DEBUG", space_to_dict(e.single_observation_space),
                                     space_to_dict(e.single_action_space), seed=0)
    finally:
        e.close()


def slab_states(raw_snapshots) -> list[dict]:
    """The decoded slab of each EngineActor snapshot (bytes): {"slots", "state": {name: array}}."""
    return [codec.unpackb(EngineSnapshot.from_bytes(r).slab_bytes) for r in raw_snapshots]
