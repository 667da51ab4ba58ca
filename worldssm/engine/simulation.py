"""The Simulation: the coordinator of the tick loop over EnvActors and EngineActors.

Layout: `env_actors` EnvActors, each with `envs_per_actor` batched envs; `engine_actors`
EngineActors; EnvActor e feeds EngineActor `e % engine_actors`, which owns a pool of slots for
its agents. Dream agents are spread over the EngineActors round robin.

One tick is one Ray round trip on the critical path: the driver hands each actor its control
message (overrides, joins and leaves queued since the last tick); each EnvActor's agents act and
their (o_t, a_t) go straight to its EngineActor, which observes them while the EnvActor steps its
envs (an EnvActor pinned to an EngineActor's core steps first, as that core runs both anyway;
see `executors.CompiledExecutor`); the driver waits once for the EngineActors' predictions and
the EnvActors' reports.
`executor="compiled"` runs that graph as a Ray Compiled Graph (compiled once, rebuilt after a
fault); `executor="plain"` submits ordinary actor calls with object refs between them (the
explicit alternative; there each EnvActor acts and steps in one call, as a plain call costs more
than the overlap saves); `backend="local"` runs the same workers in this process without Ray.

Faults: every `snapshot_every` ticks the EngineActors return a snapshot in their result. When an
actor dies, the next tick fails; the Simulation tears the graph down, restarts dead actors
(EngineActors restored from their last snapshot plus the log of dream joins since; EnvActors with
re-seeded envs whose agents keep their ids and are marked reset), recompiles and goes on. The
summary reports ticks lost per agent.

Security: `start_ray` binds a local Ray to 127.0.0.1 with token authentication switched on
explicitly and no dashboard; every message we send is msgpack bytes (see workers.py).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from worldssm import codec
from worldssm.engine.engine import IMPLS
from worldssm.engine.executors import CompiledExecutor, LocalExecutor, PlainExecutor
from worldssm.engine.workers import (
    DREAM_OWNER, OWNER_SHIFT, EngineShell, EnvShell, TickRejected, check_overrides, owner_of,
)
from worldssm.errors import WorldssmError, require

MODES = ("real", "dream", "mixed")
_NO_GIDS = np.zeros(0, np.int64)
EXECUTORS = ("compiled", "plain")
BACKENDS = ("ray", "local")


@dataclass(frozen=True)
class SimConfig:
    """What to simulate and how to spread it over actors."""

    env: str = "Pendulum-v1"  # env name for worldssm.envs.make (real agents, start observations)
    env_kwargs: dict = field(default_factory=dict)  # extra kwargs for the env
    agents: int = 16  # agents at the start (real + dream)
    mode: str = "real"  # "real" (envs step), "dream" (the model is the env) or "mixed"
    dream_fraction: float = 0.5  # share of dream agents in mixed mode
    env_actors: int = 2  # EnvActors (real and mixed modes)
    envs_per_actor: int = 1  # batched envs per EnvActor
    engine_actors: int = 1  # EngineActors (agents are sharded over them)
    policy: str = "random"  # agents' policy: "random" or "scripted"
    seed: int = 0  # base seed of envs, policies and sampling
    snapshot_every: int = 50  # ticks between EngineActor snapshots (K)
    executor: str = "compiled"  # "compiled" (Ray Compiled Graph) or "plain" (actor calls)
    backend: str = "ray"  # "ray" or "local" (same workers in this process; no Ray)
    device: str = "auto"  # EngineActor device: "auto" (cuda when the cluster has GPUs), "cpu", "cuda"
    sample: bool = False  # draw latents from the prior instead of taking its mode
    decode_dream: bool = True  # decode dream agents' observations each tick (their policy input)
    slot_headroom: float = 1.25  # engine slots per env agent slot (agents joining mid-step)
    actor_cpus: float = 0.0  # CPUs each actor reserves (raise on a cluster to spread actors)
    torch_threads: int = 1  # torch threads per EngineActor on CPU
    engine_impl: str = "auto"  # the engine's step: "auto" (numpy on CPU where it can), "numpy", "torch"
    pin_cpus: bool = True  # compiled, one-node Ray: pin the graph's threads to cores (executors.py)
    timeout_s: float = 60.0  # seconds to wait for one tick before treating it as failed
    max_recoveries: int = 10  # actor restarts allowed before the run gives up

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"SimConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"SimConfig.executor must be one of {EXECUTORS}, got {self.executor!r}")
        if self.engine_impl not in IMPLS:
            raise ValueError(f"SimConfig.engine_impl must be one of {IMPLS}, got {self.engine_impl!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"SimConfig.backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("agents", "env_actors", "envs_per_actor", "engine_actors", "snapshot_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"SimConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dream_fraction <= 1.0:
            raise ValueError(f"SimConfig.dream_fraction must be in [0, 1], got {self.dream_fraction}")
        if self.slot_headroom < 1.0:
            raise ValueError(f"SimConfig.slot_headroom must be >= 1, got {self.slot_headroom}")

    @property
    def n_dream(self) -> int:
        return {"real": 0, "dream": self.agents, "mixed": round(self.agents * self.dream_fraction)}[self.mode]

    @property
    def n_real(self) -> int:
        return self.agents - self.n_dream


def start_ray(address: str | None = None, num_cpus: int | None = None, **kwargs):
    """Start (or join) Ray safely and return the `ray` module.

    A local start is bound to 127.0.0.1, has no dashboard, and has token authentication on:
    `RAY_AUTH_MODE=token` is set explicitly (Ray 2.52+ reads it; 2.59+ would enable tokens for
    local clusters by default, we do not rely on that), and Ray writes a token to
    `~/.ray/auth_token` (or uses `RAY_AUTH_TOKEN` / `RAY_AUTH_TOKEN_PATH`). Ray binds its ports to
    the node IP it resolves; on Linux it resolves "127.0.0.1" to the machine's outward address
    unless `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, which we set for local starts and for joining a
    cluster at a loopback address ("127.0.0.1:PORT", "localhost:PORT"; otherwise the join would
    dial the outward address, where a loopback cluster does not listen). Joining an existing
    cluster (`address`) needs that cluster's token; how it is bound is its own business.

    Works whether or not the caller imported `ray` first.

    Raises:
        WorldssmError: RAY_AUTH_MODE is set to something other than "token", or the started
            Ray is not on loopback.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        raise WorldssmError(f"RAY_AUTH_MODE={mode!r}: worldssm runs Ray only with token authentication")
    os.environ["RAY_AUTH_MODE"] = "token"
    imported_before = "ray" in sys.modules
    local = address is None
    loopback = local or address.rsplit(":", 1)[0] in ("127.0.0.1", "localhost")
    if loopback:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        if "ray" in sys.modules:  # constants were read at import: set the flag they hold too
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
    ray = require("ray", "ray[default]>=2.52")
    if ray.is_initialized():
        return ray
    if imported_before:
        # Ray cached its config with the auth mode it saw at import: without a refresh this
        # driver would talk without a token to the cluster it starts with one (ray.init fails
        # with InvalidAuthToken). Ray refreshes its config the same way when it turns tokens on.
        from ray._raylet import Config

        Config.initialize("")
    if local:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=kwargs.pop("log_to_driver", False), **kwargs)
        ip = ray.get_runtime_context().worker.node.node_ip_address
        if ip != "127.0.0.1":
            ray.shutdown()
            raise WorldssmError(f"Ray bound to {ip}, not 127.0.0.1; refusing to run")
    elif loopback:
        ray.init(address=address, _node_ip_address="127.0.0.1", **kwargs)
    else:
        ray.init(address=address, **kwargs)
    return ray


@dataclass
class AgentRecord:
    kind: str  # "real" or "dream"
    joined: int  # tick it joined
    left: int | None = None  # tick it left, None while live
    reason: str | None = None  # why it left
    ticks_lost: int = 0  # ticks whose observation or step its engine state missed
    resets: int = 0  # forced restarts (its EnvActor died)
    episode_return: float | None = None  # env reward summed over its episode, once it left


@dataclass
class TickResult:
    tick: int
    latency_ms: float  # driver wall time of the round trip (plus bookkeeping)
    env_ms: float  # slowest EnvActor's own work this tick (act + env step)
    engine_ms: float  # slowest EngineActor's own work this tick (model time inside it)
    model_ms: float  # slowest EngineActor's model calls
    agents: int  # live agents after the tick
    recovered: bool = False  # the tick failed and actors were restarted
    driver_ms: float = 0.0  # the driver's own work: validating, packing controls, reading results
    # Wall time of each hop of the graph (same-host clocks; meaningless across nodes): driver ->
    # last EnvActor starting to act, last EnvActor's act done -> EngineActor starting, EngineActor
    # done -> driver holding the result (each includes Ray's serialisation, copies and wake-up).
    hop_ms: tuple = (0.0, 0.0, 0.0)
    act_ms: float = 0.0  # slowest EnvActor's act (policies, packing the engine's payload)
    # The actors' work on the tick's longest chain through the graph as built: EnvActors act
    # (and step their envs first, where the executor says so), then each EngineActor steps after
    # the payloads feeding it, and each other env step follows its act and the acts the executor
    # made it wait for (those of the EnvActors on its core). Work off
    # that chain runs at the same time, so latency - work_ms is what the tick spent on anything
    # but the actors' own work: Ray's transport, the driver, and waiting for a core.
    work_ms: float = 0.0


class Simulation:
    """Run agents in real envs, in the model's dream, or both, over Ray actors.

    Args:
        cfg: the SimConfig.
        model: where EngineActors get the model: {"checkpoint": run dir} or {"preset",
            "obs_space", "action_space", "seed"} (see `workers.load_model`).
        address: an existing Ray cluster; None starts (or reuses) a local one via `start_ray`.
    """

    def __init__(self, cfg: SimConfig, model: dict, address: str | None = None):
        self.cfg = cfg
        self.model_source = model
        self.ray = start_ray(address) if cfg.backend == "ray" else None
        self.t = 0
        self.agents: dict[int, AgentRecord] = {}
        self.history: list[TickResult] = []
        self.recoveries = 0
        self._dream_next = [0] * cfg.engine_actors
        self._pending = [{"join": [], "leave": []} for _ in range(cfg.engine_actors)]
        self._log: list[list[tuple[int, dict]]] = [[] for _ in range(cfg.engine_actors)]
        self._snap: list[tuple[int, bytes] | None] = [None] * cfg.engine_actors
        self._exec = None
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # ----- setup --------------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.cfg
        # Real agents are split as evenly as possible over the EnvActors (never an empty one),
        # then over each actor's envs (rounded up there when they do not divide).
        self.n_env_actors = min(cfg.env_actors, cfg.n_real)
        per_actor = [cfg.n_real // max(1, self.n_env_actors) + (e < cfg.n_real % max(1, self.n_env_actors))
                     for e in range(self.n_env_actors)]
        per_env = [math.ceil(n / cfg.envs_per_actor) for n in per_actor]
        self.envs_of = [[e for e in range(self.n_env_actors) if e % cfg.engine_actors == j]
                        for j in range(cfg.engine_actors)]
        pool = math.ceil(max(per_env, default=0) * cfg.envs_per_actor * cfg.slot_headroom) + 2
        dream_cap = 2 * math.ceil(cfg.n_dream / cfg.engine_actors) + 16
        self._dream_cap = dream_cap  # slots each EngineActor keeps for dream agents
        gpu = self._use_gpu()
        self._engine_specs = []
        for j in range(cfg.engine_actors):
            cap = pool * len(self.envs_of[j]) + dream_cap
            self._engine_specs.append(codec.packb({
                "index": j, "model": self.model_source, "capacity": cap,
                "device": "cuda" if gpu else "cpu", "sample": cfg.sample, "seed": cfg.seed + j,
                "decode": cfg.decode_dream, "policy": cfg.policy, "torch_threads": cfg.torch_threads,
                "impl": cfg.engine_impl,
            }))
        self.engine_actors = [self._new_engine(j) for j in range(cfg.engine_actors)]
        spaces = codec.unpackb(self._call(self.engine_actors[0], "spaces"))
        self.engine_impl = f"{spaces['impl']} on {spaces['device']}"  # e.g. "numpy on cpu"
        self.obs_space, self.action_space = spaces["obs"], spaces["action"]
        self._env_specs = []
        for e in range(self.n_env_actors):
            slots = codec.unpackb(self._call(self.engine_actors[e % cfg.engine_actors], "reserve", pool))
            self._env_specs.append({
                "index": e, "env": cfg.env, "env_kwargs": cfg.env_kwargs, "n_envs": cfg.envs_per_actor,
                "agents_per_env": per_env[e], "policy": cfg.policy, "seed": cfg.seed * 101 + e, "slots": slots,
            })
        self.env_actors = [self._new_env(e) for e in range(self.n_env_actors)]
        self._live_env = []
        for e, a in enumerate(self.env_actors):
            env_space = codec.unpackb(self._call(a, "spaces"))
            if list(env_space["obs"]["shape"]) != list(self.obs_space["shape"]) or \
                    env_space["action"]["type"] != self.action_space["type"]:
                raise WorldssmError(f"env {cfg.env!r} spaces {env_space} do not match the model's "
                                    f"{spaces}")
            live = codec.unpackb(self._call(a, "live_gids"))
            self._live_env.append(live)
            for g in live.tolist():
                self.agents[g] = AgentRecord("real", 0)
        self._preds: list[bytes | None] = [None] * self.n_env_actors
        self._live_dream = [np.zeros(0, np.int64) for _ in range(cfg.engine_actors)]
        if cfg.n_dream:
            self.add_agents(cfg.n_dream)
        for j, a in enumerate(self.engine_actors):
            self._snap[j] = (0, self._call(a, "snapshot"))
        self._exec = self._make_executor()

    def _use_gpu(self) -> bool:
        if self.cfg.device == "cpu":
            return False
        if self.cfg.backend == "local":
            import torch

            return self.cfg.device == "cuda" or (self.cfg.device == "auto" and torch.cuda.is_available())
        has = self.ray.cluster_resources().get("GPU", 0) >= 1
        if self.cfg.device == "cuda" and not has:
            raise WorldssmError("device='cuda' but the Ray cluster has no GPU")
        return has

    def _new_engine(self, j: int):
        spec = self._engine_specs[j]
        if self.cfg.backend == "local":
            return EngineShell(spec)
        from worldssm.engine.actors import EngineActor

        gpu = codec.unpackb(spec)["device"] == "cuda"
        return EngineActor.options(num_cpus=self.cfg.actor_cpus, num_gpus=1 if gpu else 0).remote(spec)

    def _new_env(self, e: int, reuse=None, first_gid: int = 0):
        spec = dict(self._env_specs[e])
        if reuse is not None:  # a restart: the agents keep their ids, new ones get fresh ids
            spec["reuse_gids"], spec["first_gid"] = reuse, first_gid
        data = codec.packb(spec)
        if self.cfg.backend == "local":
            return EnvShell(data)
        from worldssm.engine.actors import EnvActor

        return EnvActor.options(num_cpus=self.cfg.actor_cpus).remote(data)

    def _call(self, actor, method: str, *args):
        if self.cfg.backend == "local":
            return getattr(actor, method)(*args)
        return self.ray.get(getattr(actor, method).remote(*args), timeout=self.cfg.timeout_s)

    def _make_executor(self):
        if self.cfg.backend == "local":
            return LocalExecutor(self)
        if self.cfg.executor == "compiled":
            return CompiledExecutor(self)
        return PlainExecutor(self)

    # ----- agents joining and leaving between ticks ---------------------------------------------
    def add_agents(self, n: int, obs: np.ndarray | None = None, engine: int | None = None) -> np.ndarray:
        """Queue `n` dream agents to join at the next tick; returns their ids.

        Args:
            n: how many.
            obs: start observations [n, *obs_shape]; default: observations of a fresh env reset.
            engine: EngineActor index; default round robin.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if obs is None:
            obs = self._start_observations(n)
        obs = np.asarray(obs)
        if obs.shape != (n, *self.obs_space["shape"]):
            raise TickRejected(f"start observations must have shape {(n, *self.obs_space['shape'])}")
        if engine is not None and not 0 <= engine < self.cfg.engine_actors:
            raise TickRejected(f"engine {engine} is not an EngineActor index (0..{self.cfg.engine_actors - 1})")
        base = sum(self._dream_next)
        where = [engine if engine is not None else (base + i) % self.cfg.engine_actors for i in range(n)]
        # Room is checked here, before anything is queued: an EngineActor that found itself full
        # would reject the tick after the EnvActors had already stepped.
        for j in sorted(set(where)):
            p = self._pending[j]
            queued = sum(len(x["gids"]) for x in p["join"]) - sum(len(x) for x in p["leave"])
            have = self._live_dream[j].size + queued
            if have + where.count(j) > self._dream_cap:
                raise TickRejected(f"EngineActor {j} has room for {self._dream_cap} dream agents; {have} are "
                                   f"live or queued, {where.count(j)} more cannot join")
        gids = np.empty(n, np.int64)
        for i, j in enumerate(where):
            gids[i] = ((DREAM_OWNER + j) << OWNER_SHIFT) | self._dream_next[j]
            self._dream_next[j] += 1
        owners = owner_of(gids) - DREAM_OWNER
        for j in np.unique(owners):
            rows = owners == j
            self._pending[j]["join"].append({"gids": gids[rows], "obs": obs[rows].astype(np.float32)})
        for g in gids.tolist():
            self.agents[g] = AgentRecord("dream", self.t + 1)
        return gids

    def remove_agents(self, gids) -> None:
        """Queue dream agents to leave at the next tick (real agents leave when their env says)."""
        gids = np.asarray(gids, np.int64)
        owners = owner_of(gids) - DREAM_OWNER
        for g, j in zip(gids.tolist(), owners.tolist()):
            rec = self.agents.get(g)
            if rec is None or rec.kind != "dream" or rec.left is not None or not 0 <= j < self.cfg.engine_actors:
                raise TickRejected(f"agent {g} is not a live dream agent; real agents leave when their env ends them")
        for j in np.unique(owners):
            self._pending[j]["leave"].append(gids[owners == j])
        for g in gids.tolist():
            self.agents[g].left, self.agents[g].reason = self.t + 1, "removed"

    def _start_observations(self, n: int) -> np.ndarray:
        from worldssm.envs import make

        k = min(n, 64)
        kwargs = dict(self.cfg.env_kwargs)
        kwargs.setdefault("n_agents", k)
        env = make(self.cfg.env, api="batched", **kwargs)
        try:
            obs, _ = env.reset(seed=self.cfg.seed + 7 + len(self.agents))
        finally:
            env.close()
        return np.resize(obs, (n, *obs.shape[1:]))

    def live_agents(self) -> np.ndarray:
        """Ids of the agents live after the last tick (queued joins excluded)."""
        return np.concatenate(self._live_env + self._live_dream) if (self._live_env or self._live_dream) \
            else np.zeros(0, np.int64)

    # ----- the tick -----------------------------------------------------------------------------
    def tick(self, actions=None) -> TickResult:
        """Advance every agent by one step.

        Args:
            actions: optional overrides, {agent id: action} or (ids int64 [k], actions [k, ...]);
                the other agents act by their policy.

        Raises:
            TickRejected: an unknown agent, or actions of the wrong shape or dtype; nothing was
                sent, no env or engine state changed.
        """
        t0 = time.perf_counter()
        t = self.t + 1
        env_ctrl, eng_ctrl = self._controls(t, actions)  # validates before anything is sent
        t_sent = time.perf_counter()
        try:
            outs, reports = self._exec.run(env_ctrl, eng_ctrl)
            t_back = time.perf_counter()
        except Exception as exc:  # noqa: BLE001 - sorted below: user error, or a dead actor
            if self._is_rejection(exc):
                raise TickRejected(str(exc)) from exc
            if self.cfg.backend == "local" or not self._is_fault(exc):
                raise
            self.t = t
            self._recover(t, exc)
            res = TickResult(t, (time.perf_counter() - t0) * 1e3, 0.0, 0.0, 0.0,
                             int(self.live_agents().size), recovered=True)
            self.history.append(res)
            return res
        self.t = t
        for j in range(self.cfg.engine_actors):
            if self._pending[j]["join"] or self._pending[j]["leave"]:
                self._log[j].append((t, self._pending[j]))
            self._pending[j] = {"join": [], "leave": []}
        res = self._ingest(t, outs, reports, t0, t_sent, t_back)
        res.driver_ms = (t_sent - t0) * 1e3 + (time.perf_counter() - t_back) * 1e3
        self.history.append(res)
        return res

    def _controls(self, t: int, actions):
        cfg = self.cfg
        ids, acts = self._split_overrides(actions)
        owners = owner_of(ids)
        env_ctrl, eng_ctrl = [], []
        for o in (np.unique(owners) if ids.size else ()):
            rows = owners == o
            if 0 <= o < self.n_env_actors:
                live, where = self._live_env[o], f"EnvActor {o}"
            elif 0 <= o - DREAM_OWNER < cfg.engine_actors:
                j = int(o - DREAM_OWNER)
                gone = np.concatenate(self._pending[j]["leave"] or [np.zeros(0, np.int64)])
                live = self._live_dream[j][~np.isin(self._live_dream[j], gone)]
                where = f"EngineActor {j}"
            else:
                raise TickRejected(f"agent {int(ids[np.argmax(rows)])} is not a live agent")
            check_overrides(ids[rows], acts[rows], live, self.action_space, where)
        # Overrides travel only to actors that have some (workers read a missing "ids" as none).
        for e in range(self.n_env_actors):
            c = {"tick": t, "pred": self._preds[e]}
            if ids.size:
                rows = owners == e
                if rows.any():
                    c["ids"], c["actions"] = ids[rows], acts[rows]
            env_ctrl.append(codec.packb(c))
        for j in range(cfg.engine_actors):
            p = self._pending[j]
            c = {"tick": t, "snapshot": t % cfg.snapshot_every == 0}
            if ids.size:
                rows = owners == DREAM_OWNER + j
                if rows.any():
                    c["ids"], c["actions"] = ids[rows], acts[rows]
            if p["join"]:
                c["join"] = p["join"]
            if p["leave"]:
                c["leave"] = np.concatenate(p["leave"])
            eng_ctrl.append(codec.packb(c))
        return env_ctrl, eng_ctrl

    def _split_overrides(self, actions):
        dtype = np.int64 if self.action_space["type"] == "discrete" else np.float32
        shape = () if self.action_space["type"] == "discrete" else tuple(self.action_space["shape"])
        if actions is None or (isinstance(actions, dict) and not actions):
            return np.zeros(0, np.int64), np.zeros((0, *shape), dtype)
        if isinstance(actions, dict):
            try:
                ids = np.array(list(actions.keys()), dtype=np.int64)
                acts = np.stack([np.asarray(a) for a in actions.values()])
            except (TypeError, ValueError, OverflowError) as exc:
                raise TickRejected(f"actions: {exc}") from exc
        elif isinstance(actions, tuple) and len(actions) == 2:
            ids, acts = np.asarray(actions[0]), actions[1]
            if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
                raise TickRejected("actions: agent ids must be a 1-D integer array")
            ids = ids.astype(np.int64)
            if not isinstance(acts, np.ndarray) or acts.shape[:1] != ids.shape:
                raise TickRejected("actions: one action per agent id is needed")
        else:
            raise TickRejected("actions must be a dict {agent id: action} or (ids, actions)")
        return ids, acts

    def _ingest(self, t: int, outs: list[bytes], reports: list[bytes], t0: float, t_sent: float = 0.0,
                t_back: float = 0.0) -> TickResult:
        reps = [codec.unpackb(r) for r in reports]
        for e, rep in enumerate(reps):
            self._live_env[e] = rep["live"]
            if rep["joined"] is not None:
                for g in rep["joined"].tolist():
                    self.agents[g] = AgentRecord("real", t)
            if rep["left"] is not None:
                for g, ret in zip(rep["left"].tolist(), rep["left_return"].tolist()):
                    rec = self.agents[g]
                    rec.left, rec.reason, rec.episode_return = t, "episode ended", ret
        eng_ms = model_ms = 0.0
        hops = [0.0, 0.0, 0.0]
        for rep in reps:
            hops[0] = max(hops[0], (rep["t_act"][0] - t_sent) * 1e3)
        eng_done = []  # per EngineActor: the work on its path (the slowest payload feeding it, then its step)
        first = self._exec.env_step_first  # per EnvActor: its payload leaves after its env step
        sent = [r["t_out"] if first[e] else r["t_act"][1] for e, r in enumerate(reps)]
        for j, raw in enumerate(outs):
            o = codec.unpackb(raw)
            eng_ms, model_ms = max(eng_ms, o["engine_ms"]), max(model_ms, o["model_ms"])
            mine = self.envs_of[j]
            for e, pred in zip(mine, o["preds"]):
                self._preds[e] = pred
            before = [reps[e]["act_ms"] + (reps[e]["advance_ms"] if first[e] else 0.0) for e in mine]
            eng_done.append(max(before, default=0.0) + o["engine_ms"])
            if mine:
                hops[1] = max(hops[1], (o["t_in"] - max(sent[e] for e in mine)) * 1e3)
            hops[2] = max(hops[2], (t_back - o["t_out"]) * 1e3)
            self._live_dream[j] = o["dream"]["gids"] if o["dream"] is not None else _NO_GIDS
            if o["snapshot"] is not None:
                self._snap[j] = (t, o["snapshot"])
                self._log[j] = [(k, op) for k, op in self._log[j] if k > t]
        # The longest chain of actor work through the graph as built: an env step starts after
        # its own act and the acts the executor made it wait for (see executors.CompiledExecutor).
        deps = self._exec.adv_deps or [()] * len(reps)
        work_ms = max(eng_done, default=0.0)
        for e, rep in enumerate(reps):
            start = max([rep["act_ms"]] + [reps[o]["act_ms"] for o in deps[e]])
            work_ms = max(work_ms, start + rep["advance_ms"])
        live = int(sum(x.size for x in self._live_env) + sum(x.size for x in self._live_dream))
        return TickResult(
            t, (time.perf_counter() - t0) * 1e3,
            env_ms=max((r["act_ms"] + r["advance_ms"] for r in reps), default=0.0),
            engine_ms=eng_ms, model_ms=model_ms, agents=live, hop_ms=tuple(hops),
            act_ms=max((r["act_ms"] for r in reps), default=0.0), work_ms=work_ms)

    # ----- faults -------------------------------------------------------------------------------
    def _is_rejection(self, exc: BaseException) -> bool:
        if isinstance(exc, (TickRejected,)):
            return True
        cause = getattr(exc, "cause", None)
        return isinstance(cause, (TickRejected,)) or "TickRejected" in type(exc).__name__

    def _is_fault(self, exc: BaseException) -> bool:
        e = self.ray.exceptions
        kinds = tuple(k for k in (getattr(e, n, None) for n in (
            "RayActorError", "ActorDiedError", "RayChannelError", "RayChannelTimeoutError",
            "GetTimeoutError", "ActorUnavailableError")) if k is not None)
        return isinstance(exc, kinds) or isinstance(getattr(exc, "cause", None), kinds)

    def _alive(self, actor) -> int | None:
        """The actor's last processed tick, or None if it is dead."""
        try:
            return int(self.ray.get(actor.ping.remote(), timeout=self.cfg.timeout_s))
        except Exception:  # noqa: BLE001 - any failure to answer means we replace it
            return None

    def _recover(self, t: int, exc: BaseException) -> None:
        """Tick `t` failed: restart dead actors, restore, rebuild the graph, account ticks lost."""
        self.recoveries += 1
        if self.recoveries > self.cfg.max_recoveries:
            raise WorldssmError(f"giving up after {self.cfg.max_recoveries} recoveries; last fault: {exc}") from exc
        self._exec.teardown()
        last = [self._alive(a) for a in self.engine_actors]
        env_alive = [self._alive(a) is not None for a in self.env_actors]
        for j, tick_done in enumerate(last):
            if tick_done is not None:
                continue
            self.engine_actors[j] = self._new_engine(j)
            snap_tick, data = self._snap[j]
            last[j] = self._call(self.engine_actors[j], "restore", data)
            ops = [op for k, op in self._log[j] if k > snap_tick]
            ops.append(self._pending[j])  # queued for tick t, which never ran
            self._pending[j] = {"join": [], "leave": []}
            self._call(self.engine_actors[j], "apply_membership", codec.packb(ops))
            self._log[j] = [(snap_tick + 1, op) for op in ops]  # replayed: keep until the next snapshot
            for e in self.envs_of[j]:
                if env_alive[e]:
                    self._call(self.env_actors[e], "engine_restored", snap_tick)
        for j, tick_done in enumerate(last):
            if tick_done == t and (self._pending[j]["join"] or self._pending[j]["leave"]):
                self._log[j].append((t, self._pending[j]))  # this engine did run tick t
                self._pending[j] = {"join": [], "leave": []}
            lost = t - tick_done  # ticks whose step this engine's states are missing
            agents = [self._live_env[e] for e in self.envs_of[j]] + [self._live_dream[j]]
            for g in np.concatenate(agents).tolist():
                self.agents[g].ticks_lost += lost
        for e, ok in enumerate(env_alive):
            if ok:
                continue
            old = self._live_env[e]
            minted = [g & ((1 << OWNER_SHIFT) - 1) for g in self.agents if g >> OWNER_SHIFT == e]
            self.env_actors[e] = self._new_env(e, reuse=old, first_gid=max(minted, default=-1) + 1)
            new = codec.unpackb(self._call(self.env_actors[e], "live_gids"))
            kept = set(new.tolist())
            for g in old.tolist():
                rec = self.agents[g]
                if g in kept:
                    rec.resets += 1
                else:
                    rec.left, rec.reason = t, "env restarted with fewer agents"
            for g in new.tolist():
                if g not in self.agents:
                    self.agents[g] = AgentRecord("real", t)
            self._live_env[e] = new
            self._preds[e] = None
        self._preds = [None] * self.n_env_actors
        self._exec = self._make_executor()

    # ----- runs and summaries -------------------------------------------------------------------
    def run(self, ticks: int, on_tick=None) -> dict:
        """Run `ticks` ticks (calling `on_tick(result)` after each) and return `summary()`."""
        for _ in range(ticks):
            res = self.tick()
            if on_tick is not None:
                on_tick(res)
        return self.summary()

    def summary(self) -> dict:
        """Tick latency percentiles, rates, faults, and every agent's fate."""
        ok = [r for r in self.history if not r.recovered]
        lat = np.array([r.latency_ms for r in ok]) if ok else np.zeros(1)
        live = set(self.live_agents().tolist())
        missing = [g for g, r in self.agents.items() if r.left is None and g not in live]
        total = sum(r.agents for r in ok)
        seconds = lat.sum() / 1e3
        return {
            "config": dataclasses.asdict(self.cfg), "ticks": self.t, "recoveries": self.recoveries,
            "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                           "mean": float(lat.mean())},
            "env_ms_p50": float(np.median([r.env_ms for r in ok])) if ok else 0.0,
            "engine_ms_p50": float(np.median([r.engine_ms for r in ok])) if ok else 0.0,
            "model_ms_p50": float(np.median([r.model_ms for r in ok])) if ok else 0.0,
            "ticks_per_s": len(ok) / seconds if seconds > 0 else 0.0,
            "agent_steps_per_s": total / seconds if seconds > 0 else 0.0,
            "engine": self.engine_impl,
            "agents_live": len(live), "agents_seen": len(self.agents),
            "agents_missing": missing,
            "ticks_lost_total": int(sum(r.ticks_lost for r in self.agents.values())),
            "agents": {str(g): dataclasses.asdict(r) for g, r in self.agents.items()},
        }

    def close(self) -> None:
        """Tear the graph down and stop the actors (Ray itself stays up)."""
        if self._exec is not None:
            self._exec.teardown()
            self._exec = None
        if self.cfg.backend == "ray" and self.ray is not None:
            for a in getattr(self, "env_actors", []) + getattr(self, "engine_actors", []):
                try:
                    self.ray.kill(a)
                except Exception:  # noqa: BLE001 - already dead
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
