"""What a Simulation runs and how it spreads over actors: `SimConfig`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from worldssm.agents.registry import AGENTS, ENV_FREE
from worldssm.engine.engine import ENGINE_IMPLS
from worldssm.model.loading import ModelSource

MODES = ("real", "dream", "mixed")
EXECUTORS = ("compiled", "plain")
BACKENDS = ("ray", "local")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class SimConfig:
    """What to simulate and how to spread it over actors."""

    model: ModelSource | None = None  # where EngineActors get the world model (required to run)
    env: str = "Pendulum-v1"  # env name for worldssm.envs.make (real agents, start observations)
    env_kwargs: dict = field(default_factory=dict)  # extra kwargs for the env
    agents: int = 16  # agents at the start (real + dream)
    mode: str = "real"  # "real" (envs step), "dream" (the model is the env) or "mixed"
    dream_fraction: float = 0.5  # share of dream agents in mixed mode
    env_actors: int = 2  # EnvActors (real and mixed modes)
    envs_per_actor: int = 1  # batched envs per EnvActor
    engine_actors: int = 1  # EngineActors (agents are sharded over them)
    agent: str = "random"  # how real agents act (worldssm.agents)
    dream_agent: str | None = None  # how dream agents act; None: as `agent` where it needs no env
    seed: int = 0  # base seed of envs, agents and sampling
    snapshot_every: int = 50  # ticks between EngineActor snapshots (K)
    executor: str = "compiled"  # "compiled" (Ray Compiled Graph) or "plain" (actor calls)
    backend: str = "ray"  # "ray" or "local" (same workers in this process; no Ray)
    device: str = "auto"  # EngineActor device: "auto" (cuda when the cluster has GPUs), "cpu", "cuda"
    sample: bool = False  # draw latents from the prior instead of taking its mode
    decode_dream: bool = True  # decode dream agents' observations each tick (their agent's input)
    slot_headroom: float = 1.25  # engine slots per env agent slot (agents joining mid-step)
    actor_cpus: float = 0.0  # CPUs each actor reserves (raise on a cluster to spread actors)
    torch_threads: int = 1  # torch threads per EngineActor on CPU
    engine_impl: str = "auto"  # the engine's step: "auto" (numpy on CPU where it can), "numpy", "torch"
    pin_cpus: bool = True  # compiled, one-node Ray: pin the graph's threads to cores (executors.py)
    timeout_s: float = 60.0  # seconds to wait for one tick before treating it as failed
    max_recoveries: int = 10  # actor restarts allowed before the run gives up
    keep_ticks: int = 100_000  # ticks whose results are kept for the summary's percentiles

    CHOICES: ClassVar[dict] = {"mode": MODES, "executor": EXECUTORS, "backend": BACKENDS,
                               "device": DEVICES, "agent": AGENTS, "dream_agent": ENV_FREE,
                               "engine_impl": ENGINE_IMPLS}

    def __post_init__(self):
        if self.model is not None and not isinstance(self.model, ModelSource):
            raise ValueError(f"SimConfig.model must be a ModelSource, got {type(self.model).__name__}")
        for name, options in self.CHOICES.items():
            value = getattr(self, name)
            if value is not None and value not in options:
                raise ValueError(f"SimConfig.{name} must be one of {options}, got {value!r}")
        for name in ("agents", "env_actors", "envs_per_actor", "engine_actors", "snapshot_every",
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
                             f"set SimConfig.dream_agent to one of {ENV_FREE}")

    @property
    def n_dream(self) -> int:
        return {"real": 0, "dream": self.agents, "mixed": round(self.agents * self.dream_fraction)}[self.mode]

    @property
    def n_real(self) -> int:
        return self.agents - self.n_dream

    @property
    def dream_agent_name(self) -> str | None:
        """How dream agents act; None when `agent` needs a real env and no `dream_agent` is set
        (then no dream agent may join)."""
        if self.dream_agent is not None:
            return self.dream_agent
        return self.agent if self.agent in ENV_FREE else None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = None if self.model is None else self.model.to_dict()
        return d
