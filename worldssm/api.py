"""worldssm's public Python API, also reachable as `import worldssm as ws`.

    import worldssm as ws

    model = ws.load("runs/pendulum")                         # a run or checkpoint directory
    engine = ws.Engine(model, capacity=1024)                 # states of up to 1,024 agents
    planner = ws.make_planner(engine, "fast")                # MPPI (Box actions) or CEM (Discrete)
    result = ws.run_episodes(planner, "Pendulum-v1", episodes=10)
    env = ws.DreamVectorEnv("runs/pendulum", num_envs=64)    # the model as a Gymnasium vector env

What is here:

- data and training: `collect` (rollouts of an env's agents as shards), `train_model` (a world
  model from them, with `TrainConfig`'s fields; `worldssm.train` is the package);
- the model: `load`, `WorldModel`, `WorldModelConfig`, `preset`;
- the engine (agents' states stepped in batches): `Engine`, `EngineOutput`;
- the model as an environment: `DreamEnv` (Gymnasium, also `gymnasium.make("worldssm/Dream-v0",
  checkpoint=...)`), `DreamVectorEnv`, `DreamParallelEnv` (PettingZoo Parallel API);
- agents: the `Agent` protocol (`act(obs [A, ...], info: AgentInfo) -> actions [A, ...]`), the
  scripted agents, the planners (`MPPIPlanner`, `CEMPlanner`, `PlannerConfig`,
  `PLANNER_PRESETS`, `make_planner`), `EnsembleEngine` (plan over several models: their mean
  reward, the lowest continue) and `run_episodes` / `plan_in_env` to score them; a
  planner's value of what follows its horizon: `Value`, `fit_value_in_dreams` / `DreamValueConfig`
  (value iteration in the model's imagination), `fit_value` / `ValueConfig` (the data's returns),
  `load_value`;
- simulations of many agents on Ray (or in this process): `Simulation`, `SimConfig`,
  `ModelSource`;
- environments by name: `make_env` (swarm_v0, PettingZoo names, Gymnasium ids);
- play inside a model beside reality: `open_play` (the `worldssm play` window).

Everything else in the package is internal and may change between versions.
"""

from __future__ import annotations

from pathlib import Path

from worldssm.agents import Agent, AgentInfo, GreedyAgent, PatternAgent, RandomAgent
from worldssm.agents.ensemble import EnsembleEngine
from worldssm.agents.planners import (
    PLANNER_PRESETS,
    CEMPlanner,
    MPPIPlanner,
    PlannerConfig,
    PlannerError,
    make_planner,
)
from worldssm.agents.rollout import EpisodeResult, plan_in_env, run_episodes
from worldssm.agents.value import DreamValueConfig, Value, ValueConfig, fit_value, fit_value_in_dreams, load_value
from worldssm.dream import Contexts, DreamEnv, DreamParallelEnv, DreamVectorEnv
from worldssm.engine import Engine, EngineOutput
from worldssm.envs import make as make_env
from worldssm.errors import WorldssmError
from worldssm.model import ModelSource, WorldModel, WorldModelConfig, preset
from worldssm.sim import SimConfig, Simulation
from worldssm.train.config import TrainConfig


def collect(env: str, out: str | Path, agents: int | None = 8, steps: int = 2000, agent="random", seed: int = 0,
            env_kwargs: dict | None = None) -> dict:
    """Record `steps` ticks of `agents` agents (copies of a Gymnasium env; None: the env's own
    agents, as swarm_v0 and PettingZoo envs have) acting in `env` as shards in the new directory
    `out`; `agent` is a name ("random", "pattern", "greedy", an
    import path "package.module:Name") or an object with `act(obs, info)`. Returns a summary
    (steps and episodes written)."""
    from worldssm.data import collect as _collect

    return _collect(env, n_agents=agents, steps=steps, out_dir=out, seed=seed, agent=agent, env_kwargs=env_kwargs)


def train_model(data: str | Path, run: str | Path, config: TrainConfig | None = None, resume: bool = False,
          progress: bool = False, **fields) -> dict:
    """Train a world model on the shards under `data` into the run directory `run` (which must be
    new or empty unless `resume`); `config` and/or `TrainConfig` fields as keywords, e.g.
    `train_model("data", "runs/x", preset="SMALL", steps=3000)`. Returns the final metrics; the model is
    then `load(run)`."""
    import dataclasses

    from worldssm.train import train as _train

    cfg = dataclasses.replace(config or TrainConfig(), **fields)
    return _train(data, run, cfg, resume=resume, progress=progress)


def open_play(checkpoint=None, env: str | None = None, **options):
    """The `worldssm play` window for a run directory (None: the small CartPole-v1 model that
    ships with worldssm), open and not yet stepped: `app.run()` plays until it is closed,
    `app.session` holds reality, the dreams and the switches. Options: see
    `worldssm.play.open_app` (fps, resync, record_dir, agent, keymap, ...)."""
    from worldssm.play import open_app

    return open_app(checkpoint, env=env, **options)


def load(path: str | Path, device: str = "cpu") -> WorldModel:
    """The world model of a run directory (its latest checkpoint) or of a checkpoint directory,
    in eval mode on `device`. Its spaces are `model.obs_space` and `model.action_space`.

    Raises:
        CheckpointError: the directory holds no checkpoint, or a damaged one (the file and field
            are named); nothing in it is unpickled.
    """
    from worldssm.model import load_model

    model, _ = load_model(path, device=device)
    return model


__all__ = [
    "PLANNER_PRESETS", "Agent", "AgentInfo", "CEMPlanner", "Contexts", "DreamEnv", "DreamParallelEnv",
    "DreamValueConfig", "DreamVectorEnv", "Engine", "EngineOutput", "EnsembleEngine", "EpisodeResult", "GreedyAgent", "MPPIPlanner",
    "ModelSource", "PatternAgent", "PlannerConfig", "PlannerError", "RandomAgent", "SimConfig", "Simulation",
    "WorldModel", "TrainConfig", "Value", "ValueConfig", "WorldModelConfig", "WorldssmError", "collect", "fit_value",
    "fit_value_in_dreams", "load", "load_value", "make_env", "make_planner", "open_play", "plan_in_env",
    "preset", "run_episodes", "train_model",
]
