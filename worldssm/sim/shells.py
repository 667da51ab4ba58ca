"""Bytes-in, bytes-out faces of the two workers: what the Ray actors run (`actors.py` wraps these
classes with `ray.remote`) and what the local backend calls directly.

Every argument and result is message bytes (`messages.py`) or a plain int, so the only thing
Ray pickles across our interfaces is `bytes`. Each shell decodes (and so validates) what it
receives; the worker sees typed messages only.
"""

from __future__ import annotations

import os

from worldssm import codec
from worldssm.errors import WorldssmError
from worldssm.sim.engine_worker import EngineWorker
from worldssm.sim.env_worker import EnvWorker
from worldssm.sim.messages import (
    ActorSpaces,
    EngineActorSetup,
    EngineControl,
    EngineResult,
    EngineSnapshot,
    EnvActorSetup,
    EnvControl,
    EnvPayload,
    MembershipLog,
    Predictions,
)


def pin_thread(cpu: int | None) -> bool:
    """Pin the calling thread to `cpu` (Linux; a no-op elsewhere or for None). Returns whether
    it did. Only this thread moves: `sched_setaffinity(0, ...)` acts on the caller's thread."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(0, {int(cpu)})
        return True
    except OSError:
        return False


def trim_memory() -> bool:
    """glibc's `malloc_trim(0)` in this process; False where there is no glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not hasattr(os, "sched_getaffinity"):
        return False
    try:
        return bool(ctypes.CDLL(name).malloc_trim(0) >= 0)
    except (OSError, AttributeError):
        return False


class _Shell:
    """What both shells share: liveness, and Compiled Graph thread pinning (the graph's thread
    pins itself to a core on its next tick; see `executors.CompiledExecutor` for why and which
    core)."""

    def __init__(self, worker):
        self.worker = worker
        self._pin_cpu: int | None = None

    def ping(self) -> int:
        return self.worker.tick

    def pid(self) -> int:
        """This actor's process id (a soak benchmark reads its resident memory)."""
        return os.getpid()

    def trim_memory(self) -> bool:
        """Return the heap's free pages to the system (glibc's malloc_trim): what a tick frees
        otherwise stays resident. Returns whether it ran (Linux with glibc only)."""
        return trim_memory()

    def pin_graph_thread(self, cpu: int | None) -> int:
        """The thread that runs the next tick (a Compiled Graph's) pins itself to `cpu`."""
        self._pin_cpu = None if cpu is None else int(cpu)
        return -1 if cpu is None else int(cpu)

    def _apply_pin(self) -> None:
        if self._pin_cpu is not None:
            pin_thread(self._pin_cpu)
            self._pin_cpu = None


class EnvShell(_Shell):
    """The face of an EnvWorker."""

    def __init__(self, setup: bytes):
        super().__init__(EnvWorker(EnvActorSetup.from_bytes(setup)))

    def act(self, ctrl: bytes) -> bytes:
        """The agents act: EnvControl bytes -> EnvPayload bytes for the EngineActor."""
        self._apply_pin()
        return self.worker.act(EnvControl.from_bytes(ctrl)).to_bytes()

    def step_envs(self, *acted: bytes) -> bytes:
        """The envs step -> EnvReport bytes. `acted`: the payloads of this EnvActor's act and of
        those it waits for (ordering only: a graph skips this when an act raised)."""
        return self.worker.step_envs().to_bytes()

    def step_after_engine(self, result: bytes) -> bytes:
        """The envs step once the EngineActor decided for this actor's planning agents: its
        EngineResult bytes -> EnvReport bytes (the planners' actions are in this actor's
        Predictions)."""
        res = EngineResult.from_bytes(result)
        if not 0 <= self.worker.row < len(res.preds):
            raise WorldssmError(f"EnvWorker {self.worker.index}: the engine's result has no predictions "
                                f"for its row {self.worker.row}")
        pred = Predictions.from_bytes(res.preds[self.worker.row])
        return self.worker.step_envs(pred.actions).to_bytes()

    def act_and_step(self, ctrl: bytes) -> tuple[bytes, bytes]:
        """`act` then `step_envs` in one call: (payload, report). The plain executor's form (each
        Ray call costs more than overlapping the env step would hide), and a Compiled Graph's for
        an EnvActor that shares its core with an EngineActor."""
        self._apply_pin()
        payload = self.worker.act(EnvControl.from_bytes(ctrl)).to_bytes()
        return payload, self.worker.step_envs().to_bytes()

    def live_ids(self) -> bytes:
        return codec.packb(self.worker.live_ids())

    def last_report(self) -> bytes | None:
        """The EnvReport bytes of the last env step (None before the first)."""
        rep = self.worker.last_report
        return None if rep is None else rep.to_bytes()

    def spaces(self) -> bytes:
        return ActorSpaces(obs=self.worker.obs_space, action=self.worker.action_space).to_bytes()

    def engine_restored(self, snapshot_tick: int) -> int:
        return self.worker.engine_restored(int(snapshot_tick))


class EngineShell(_Shell):
    """The face of an EngineWorker."""

    def __init__(self, setup: bytes):
        super().__init__(EngineWorker(EngineActorSetup.from_bytes(setup)))

    def tick(self, ctrl: bytes, *payloads: bytes) -> bytes:
        """EngineControl and the EnvPayloads of the EnvActors feeding it -> EngineResult bytes."""
        self._apply_pin()
        return self.worker.tick_once(EngineControl.from_bytes(ctrl),
                                     [EnvPayload.from_bytes(p) for p in payloads]).to_bytes()

    def reserve(self, n: int) -> bytes:
        return codec.packb(self.worker.reserve(int(n)))

    def spaces(self) -> bytes:
        return self.worker.spaces().to_bytes()

    def snapshot(self) -> bytes:
        return self.worker.snapshot().to_bytes()

    def restore(self, snapshot: bytes) -> int:
        return self.worker.restore(EngineSnapshot.from_bytes(snapshot))

    def replay(self, log: bytes) -> int:
        """Re-apply dream joins and leaves logged since a snapshot (MembershipLog bytes)."""
        return self.worker.replay(MembershipLog.from_bytes(log).ops)

    def dream_ids(self) -> bytes:
        """The ids of the dream agents live on this EngineActor now (packed int64)."""
        return codec.packb(self.worker.d_ids)
