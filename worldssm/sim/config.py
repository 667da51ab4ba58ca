"""What a Simulation runs and how it spreads over actors: `SimConfig`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from worldssm.agents.planners import PLANNER_PRESETS
from worldssm.choices import BACKENDS, MODES, STATE_DTYPES, TORCH_DEVICES
from worldssm.agents.registry import ENV_FREE, PLANNER, check_name
from worldssm.engine.engine import ENGINE_IMPLS
from worldssm.model.loading import ModelSource

EXECUTORS = ("compiled", "plain")
DEVICES = ("auto", *TORCH_DEVICES)


@dataclass(frozen=True)
class SimConfig:
    """What to simulate and how to spread it over actors."""

    model: ModelSource | None = None  # where EngineActors get the world model (required to run)
    env: str = "Pendulum-v1"  # env name for worldssm.envs.make (real agents, start observations)
    env_kwargs: dict = field(default_factory=dict)  # extra kwargs for the env
    # agents at the start (real + dream): a number (real agents act as `agent`), or how many of
    # each kind, {name: count}, a name being an agent of worldssm.agents, "planner" or an import
    # path "package.module:Name" (rows take kinds in these proportions, joiners too)
    agents: int | dict = 16
    agent_kwargs: dict = field(default_factory=dict)  # {name: {keyword: value}} for import-path agents
    mode: str = "real"  # "real" (envs step), "dream" (the model is the env) or "mixed"
    dream_fraction: float = 0.5  # share of dream agents in mixed mode
    env_actors: int = 2  # EnvActors (real and mixed modes)
    envs_per_actor: int = 1  # batched envs per EnvActor
    engine_actors: int = 1  # EngineActors (agents are sharded over them)
    agent: str = "random"  # how real agents act when `agents` is a number (a name as in `agents`)
    dream_agent: str | None = None  # how dream agents act; None: as `agent` where it needs no env
    planner: str = "fast"  # search settings of "planner" agents (worldssm.agents.planners.PLANNER_PRESETS)
    seed: int = 0  # base seed of envs, agents and sampling
    snapshot_every: int = 50  # ticks between EngineActor snapshots (K)
    executor: str = "compiled"  # "compiled" (Ray Compiled Graph) or "plain" (actor calls)
    backend: str = "ray"  # "ray" or "local" (same workers in this process; no Ray)
    device: str = "auto"  # EngineActor device: "auto" (cuda when the cluster has GPUs), "cpu", "cuda"
    sample: bool = False  # draw latents from the prior instead of taking its expectation
    decode_dream: bool = True  # decode dream agents' observations each tick (their agent's input)
    slot_headroom: float = 1.25  # engine slots per env agent slot (agents joining mid-step)
    actor_cpus: float = 0.0  # CPUs each actor reserves (raise on a cluster to spread actors)
    torch_threads: int = 1  # torch threads per EngineActor on CPU
    engine_impl: str = "auto"  # the engine's step: "auto" (numpy on CPU where it can), "numpy", "torch"
    engine_state_dtype: str | None = None  # how engines store Mamba-2 SSM states: "float32", "bfloat16"; none: the model's
    pin_cpus: bool = True  # compiled, one-node Ray: pin the graph's threads to cores (executors.py)
    timeout_s: float = 60.0  # seconds to wait for one tick before treating it as failed
    max_recoveries: int = 10  # actor restarts allowed before the run gives up
    keep_ticks: int = 100_000  # ticks whose results are kept for the summary's percentiles

    CHOICES: ClassVar[dict] = {"mode": MODES, "executor": EXECUTORS, "backend": BACKENDS,
                               "device": DEVICES, "planner": tuple(PLANNER_PRESETS), "engine_impl": ENGINE_IMPLS,
                               "engine_state_dtype": STATE_DTYPES}

    def __post_init__(self):
        if self.model is not None and not isinstance(self.model, ModelSource):
            raise ValueError(f"SimConfig.model must be a ModelSource, got {type(self.model).__name__}")
        for name, options in self.CHOICES.items():
            value = getattr(self, name)
            if value is not None and value not in options:
                raise ValueError(f"SimConfig.{name} must be one of {options}, got {value!r}")
        self._check_agents()
        for name in ("env_actors", "envs_per_actor", "engine_actors", "snapshot_every",
                     "torch_threads", "keep_ticks"):
            if getattr(self, name) < 1:
                raise ValueError(f"SimConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"SimConfig.seed must be in [0, 2**32), got {self.seed}")
        if not 0.0 <= self.dream_fraction <= 1.0:
            raise ValueError(f"SimConfig.dream_fraction must be in [0, 1], got {self.dream_fraction}")
        if not self.slot_headroom >= 1.0:
            raise ValueError(f"SimConfig.slot_headroom must be >= 1, got {self.slot_headroom}")
        if not self.timeout_s > 0:
            raise ValueError(f"SimConfig.timeout_s must be > 0, got {self.timeout_s}")
        if not self.actor_cpus >= 0:
            raise ValueError(f"SimConfig.actor_cpus must be >= 0, got {self.actor_cpus}")
        if self.max_recoveries < 0:
            raise ValueError(f"SimConfig.max_recoveries must be >= 0, got {self.max_recoveries}")
        if self.n_dream and self.dream_agent_name is None:
            raise ValueError(f"dream agents cannot act as {self.agent!r} (it reads a real env); "
                             f"set SimConfig.dream_agent to one of {ENV_FREE}, 'planner' or an import path")

    def _check_agents(self) -> None:
        check_name(self.agent, "SimConfig.agent")
        if self.dream_agent is not None:
            check_name(self.dream_agent, "SimConfig.dream_agent")
        if isinstance(self.agents, dict):
            if self.agent != "random":
                raise ValueError("give the kinds of agents in SimConfig.agents ({name: count}) or one kind in "
                                 "SimConfig.agent, not both")
            for name, count in self.agents.items():
                check_name(name, "a key of SimConfig.agents")
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise ValueError(f"SimConfig.agents[{name!r}] must be an int >= 0, got {count!r}")
            if sum(self.agents.values()) < 1:
                raise ValueError(f"SimConfig.agents must count at least one agent, got {self.agents}")
        elif isinstance(self.agents, bool) or not isinstance(self.agents, int) or self.agents < 1:
            raise ValueError(f"SimConfig.agents must be an int >= 1 or a {{name: count}} dict, got {self.agents!r}")
        if not isinstance(self.agent_kwargs, dict):
            raise ValueError(f"SimConfig.agent_kwargs must be a dict, got {type(self.agent_kwargs).__name__}")
        named = set(self.agents) if isinstance(self.agents, dict) else {self.agent}
        named.add(self.dream_agent_name or "")
        for name, kw in self.agent_kwargs.items():
            if name not in named:
                raise ValueError(f"SimConfig.agent_kwargs names {name!r}, which no agent is")
            if not isinstance(kw, dict) or not all(isinstance(k, str) for k in kw):
                raise ValueError(f"SimConfig.agent_kwargs[{name!r}] must be a dict with string keys")

    @property
    def n_agents(self) -> int:
        """Agents at the start, real and dream."""
        return sum(self.agents.values()) if isinstance(self.agents, dict) else self.agents

    @property
    def n_dream(self) -> int:
        n = self.n_agents
        return {"real": 0, "dream": n, "mixed": round(n * self.dream_fraction)}[self.mode]

    @property
    def n_real(self) -> int:
        return self.n_agents - self.n_dream

    @property
    def mix(self) -> tuple:
        """The kinds of real agents and their shares: ((name, share), ...) (shares are the counts
        of `agents`, or the one `agent` for a number)."""
        if isinstance(self.agents, dict):
            return tuple((name, count) for name, count in self.agents.items() if count > 0)
        return ((self.agent, 1),)

    @property
    def plans(self) -> bool:
        """Whether real agents plan (their actions come from the EngineActor)."""
        return self.n_real > 0 and any(name == PLANNER for name, _ in self.mix)

    def planner_share(self) -> float:
        """The share of real agents that plan."""
        total = sum(share for _, share in self.mix)
        return sum(share for name, share in self.mix if name == PLANNER) / total

    @property
    def dream_agent_name(self) -> str | None:
        """How dream agents act; None when `agent` needs a real env and no `dream_agent` is set
        (then no dream agent may join)."""
        if self.dream_agent is not None:
            return self.dream_agent
        return self.agent if (self.agent in ENV_FREE or self.agent == PLANNER) and not isinstance(self.agents, dict) \
            else None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = None if self.model is None else self.model.to_dict()
        return d
