"""Multi-agent environments: the swarm world, batched and PettingZoo APIs, adapters.

`make(name, api="parallel" | "batched", **kwargs)` and `names()` are the entry points; the
batched contract is in `worldssm.envs.api`. Importing this package registers the single-agent
Gymnasium views (`worldssm/Swarm-v0`) when gymnasium is installed; the numpy core
(`worldssm.envs.swarm`) works without it.
"""

from worldssm.envs.api import BatchedEnv
from worldssm.envs.registry import kind_of, make, names, register
from worldssm.envs.swarm import SwarmConfig, SwarmEnv

GYM_IDS = ("worldssm/Swarm-v0", "worldssm/Pong64-v0", "worldssm/Breakout64-v0")


def _register_gymnasium_ids() -> None:
    import importlib.util

    # gymnasium is a core dependency, but the GPU machine runs `worldssm bench` with numpy only;
    # there nobody can call gymnasium.make, so there is nothing to register.
    if importlib.util.find_spec("gymnasium") is None:
        return
    import gymnasium

    if GYM_IDS[0] not in gymnasium.registry:
        gymnasium.register(
            id=GYM_IDS[0],
            entry_point="worldssm.envs.swarm.gym_view:SwarmGymEnv",
            max_episode_steps=None,
        )
    from worldssm.envs import atari

    atari.register()
    if "worldssm/Dream-v0" not in gymnasium.registry:  # the world model as an env (worldssm.dream)
        gymnasium.register(id="worldssm/Dream-v0", entry_point="worldssm.dream:DreamEnv")


_register_gymnasium_ids()

__all__ = ["GYM_IDS", "BatchedEnv", "SwarmConfig", "SwarmEnv", "kind_of", "make", "names", "register"]
