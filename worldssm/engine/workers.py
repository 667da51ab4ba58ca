"""The work of one tick inside each actor, as plain classes (the Ray actors are thin shells).

`EnvWorker` holds a batch of multi-agent envs (batched API) and their agents; `EngineWorker`
holds an `Engine` and the agents that dream on it. Every message between them and the
coordinator is msgpack bytes from `worldssm.codec` (never pickle), so nothing crossing our
interfaces can run code when decoded.

Agents have global ids (gids, int64): `owner << 32 | n`, where the owner is the EnvWorker index
for env agents and `DREAM_OWNER + j` for agents dreaming on EngineWorker j.

One tick, real agents: each EnvWorker lets its agents act on their current observations o_t
(overrides from the caller replace some actions) and sends (slots, o_t, a_t, reset) to its
EngineWorker (`act`); then it steps its envs (`advance`) while the EngineWorker observes all of
them in one batched call and returns its predictions, which the coordinator hands back to the
EnvWorker next tick. The env step and the engine's observe do not depend on each other, so they
can run at the same time (`step` does both halves in one call, for callers that run them in
turn). Dream agents act inside the EngineWorker on their decoded observations and are imagined
in one call.
"""

from __future__ import annotations

import os
import time

import numpy as np

from worldssm import codec
from worldssm.engine.engine import EngineInputError, check_actions
from worldssm.engine.policies import make_policy
from worldssm.errors import WorldssmError

OWNER_SHIFT = 32
DREAM_OWNER = 1 << 20


def owner_of(gids) -> np.ndarray:
    return np.asarray(gids, np.int64) >> OWNER_SHIFT


class TickRejected(WorldssmError, ValueError):
    """A tick's inputs are invalid; the actor that says so changed nothing."""


def check_overrides(ids, actions, live: np.ndarray, space: dict, where: str) -> None:
    """Raise TickRejected unless every id in `ids` is live and `actions` [k, ...] fit `space`."""
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise TickRejected(f"{where}: agent ids must be a 1-D integer array")
    if not isinstance(actions, np.ndarray):
        raise TickRejected(f"{where}: actions must be a numpy array, got {type(actions).__name__}")
    unknown = ~np.isin(ids, live)
    if unknown.any():
        raise TickRejected(f"{where}: agent {int(ids[np.argmax(unknown)])} is not a live agent here")
    if np.unique(ids).size != ids.size:
        raise TickRejected(f"{where}: an agent is given two actions")
    try:
        check_actions(space, actions, ids.size)
    except EngineInputError as exc:
        raise TickRejected(f"{where}: {exc}") from exc


def load_model(source: dict):
    """A WorldModel from {"checkpoint": path} or {"preset", "obs_space", "action_space", "seed"}."""
    import torch

    if "checkpoint" in source:
        from worldssm.train.checkpoint import load_model as load

        model, _ = load(source["checkpoint"], device="cpu", kernels=source.get("kernels"))
        return model
    from worldssm.model import WorldModel, preset

    torch.manual_seed(int(source.get("seed", 0)))
    return WorldModel(preset(source["preset"]), source["obs_space"], source["action_space"]).eval()


# --------------------------------------------------------------------------------------------
class _EnvSlot:
    """One batched env and its live agents, row-aligned with `env.agent_ids`."""

    def __init__(self, env, policy):
        self.env, self.policy = env, policy
        self.gids = np.zeros(0, np.int64)
        self.slots = np.zeros(0, np.int64)
        self.first = np.zeros(0, bool)
        self.joined = np.zeros(0, np.int64)  # tick each agent joined
        self.ret = np.zeros(0, np.float64)  # return so far
        self.obs = None


class EnvWorker:
    """A batch of multi-agent envs driven through the batched API, and their agents.

    Args:
        spec: {"index", "env", "env_kwargs", "n_envs", "agents_per_env", "policy", "seed",
            "slots" (int64 engine slots this worker may use), "reuse_gids" (optional int64: gids
            to give the first agents, after a restart)}.
    """

    def __init__(self, spec: dict):
        from worldssm.data.format import space_to_dict
        from worldssm.envs import make
        from worldssm.envs.registry import PETTINGZOO_PREFIX

        self.index = int(spec["index"])
        self.seed = int(spec["seed"])
        pool = np.asarray(spec["slots"], np.int64)
        self._free = list(pool[::-1])
        self.tick = 0
        self._next = int(spec.get("first_gid", 0))
        self._reuse = list(np.asarray(spec.get("reuse_gids", []), np.int64)[::-1])
        kwargs = dict(spec.get("env_kwargs") or {})
        name = spec["env"]
        if not name.startswith(PETTINGZOO_PREFIX):
            kwargs.setdefault("n_agents", int(spec["agents_per_env"]))
            from worldssm.envs.registry import _BUILTIN

            if name not in _BUILTIN:
                kwargs.setdefault("autoreset", "new_agent")
        self.envs = []
        for i in range(int(spec["n_envs"])):
            env = make(name, api="batched", **kwargs)
            self.action_space = space_to_dict(env.single_action_space)
            self.obs_space = space_to_dict(env.single_observation_space)
            pol = make_policy(spec["policy"], self.action_space, env, seed=self.seed * 1000 + i)
            self.envs.append(_EnvSlot(env, pol))
        self._pred_index = np.zeros(0, np.int64)
        self._acts: list[np.ndarray] | None = None  # act's actions, until advance steps them
        self._act_times = (0.0, 0.0)
        self._pending_left: list[np.ndarray] = []
        self._pending_returns: list[np.ndarray] = []
        for i, e in enumerate(self.envs):
            self._reset_env(e, seed=self.seed * 1000 + i)

    # ----- agents -------------------------------------------------------------------------------
    def _mint(self, n: int) -> np.ndarray:
        out = np.empty(n, np.int64)
        for i in range(n):
            if self._reuse:
                out[i] = self._reuse.pop()
            else:
                out[i] = (self.index << OWNER_SHIFT) | self._next
                self._next += 1
        return out

    def _take_slots(self, n: int) -> np.ndarray:
        if n > len(self._free):
            raise WorldssmError(f"EnvWorker {self.index}: out of engine slots ({n} needed, "
                                f"{len(self._free)} free); raise slot_headroom")
        return np.array([self._free.pop() for _ in range(n)], np.int64)

    def _reset_env(self, e: _EnvSlot, seed=None) -> None:
        if e.gids.size:
            self._leave(e, np.ones(e.gids.size, bool))
        obs, info = e.env.reset(seed=seed)
        n = len(info["agent_ids"])
        e.gids, e.slots = self._mint(n), self._take_slots(n)
        e.first, e.joined = np.ones(n, bool), np.full(n, self.tick, np.int64)
        e.ret, e.obs = np.zeros(n), obs

    def _leave(self, e: _EnvSlot, mask: np.ndarray) -> None:
        self._free.extend(e.slots[mask][::-1].tolist())
        self._pending_left.append(e.gids[mask])
        self._pending_returns.append(e.ret[mask])

    def live_gids(self) -> np.ndarray:
        return np.concatenate([e.gids for e in self.envs])

    def engine_restored(self, snapshot_tick: int) -> int:
        """The engine went back to `snapshot_tick`: agents that joined later start afresh."""
        n = 0
        for e in self.envs:
            late = e.joined > snapshot_tick
            e.first |= late
            n += int(late.sum())
        return n

    # ----- the tick -----------------------------------------------------------------------------
    def act(self, ctrl: bytes) -> bytes:
        """First half of a tick: the agents act on o_t; returns the payload for the EngineWorker
        (slots, o_t, a_t, resets). The envs step afterwards, in `advance`, while the engine
        observes: the two do not depend on each other."""
        t0 = time.perf_counter()
        c = codec.unpackb(ctrl)
        tick = int(c["tick"])
        acts = self._actions(c, tick)  # validates everything before any state changes
        self.tick = tick
        self._acts = acts
        payload = codec.packb({
            "slots": np.concatenate([e.slots for e in self.envs]),
            "obs": np.concatenate([e.obs for e in self.envs]),
            "actions": np.concatenate(acts),
            "resets": np.concatenate([e.first for e in self.envs]),
        })
        t1 = time.perf_counter()
        self._act_times = (t0, t1)
        return payload

    def advance(self) -> bytes:
        """Second half of a tick: step the envs with the actions of `act`; returns the report for
        the coordinator (live, joined and left agents, timings). Its shell takes act's payload as
        an ordering dependency: a Compiled Graph or a plain call skips it when `act` raised."""
        t0 = time.perf_counter()
        acts, self._acts = self._acts, None
        if acts is None:
            raise WorldssmError(f"EnvWorker {self.index}: advance() without a successful act() first")
        tick = self.tick
        pred_index, joined = [], []
        offset = 0
        for e, a in zip(self.envs, acts):
            n = e.gids.size
            obs2, rew, term, trunc, info = e.env.step(a)
            ended = np.asarray(term) | np.asarray(trunc)
            e.ret += rew
            new_ids = info.get("spawned_ids", ())
            j = len(new_ids)
            if j == 0 and not ended.any():  # the common tick: the same agents in the same rows
                e.first = np.zeros(n, bool)
                e.obs = obs2
                pred_index.append(offset + np.arange(n, dtype=np.int64))
                offset += n
                if e.env.num_agents == 0:
                    self._reset_env(e)
                    joined.append(e.gids)
                    pred_index[-1] = np.full(e.gids.size, -1)
                continue
            self._leave(e, ended)
            keep = ~ended
            new_gids, new_slots = self._mint(j), self._take_slots(j)
            e.gids = np.concatenate([e.gids[keep], new_gids])
            e.slots = np.concatenate([e.slots[keep], new_slots])
            e.first = np.concatenate([np.zeros(int(keep.sum()), bool), np.ones(j, bool)])
            e.joined = np.concatenate([e.joined[keep], np.full(j, tick, np.int64)])
            e.ret = np.concatenate([e.ret[keep], np.zeros(j)])
            if j:
                e.obs = np.concatenate([obs2[keep], info["spawned_obs"].astype(obs2.dtype, copy=False)])
            else:
                e.obs = obs2[keep]
            pred_index.append(np.concatenate([offset + np.flatnonzero(keep), np.full(j, -1)]))
            joined.append(new_gids)
            offset += n
            if e.env.num_agents == 0:  # the episode is over: start the next one
                self._reset_env(e)
                joined.append(e.gids)
                pred_index[-1] = np.full(e.gids.size, -1)
        self._pred_index = np.concatenate(pred_index).astype(np.int64)
        left = np.concatenate(self._pending_left) if self._pending_left else np.zeros(0, np.int64)
        returns = np.concatenate(self._pending_returns) if self._pending_returns else np.zeros(0)
        self._pending_left, self._pending_returns = [], []
        joined = np.concatenate(joined) if joined else np.zeros(0, np.int64)
        a0, a1 = self._act_times
        # The coordinator reads live, joined, left and left_return; empty ones travel as None
        # (most ticks nobody joins or leaves), so a quiet tick's report holds one array.
        # perf_counter is CLOCK_MONOTONIC: the timestamps compare across processes of one host only.
        return codec.packb({
            "index": self.index, "tick": tick, "live": self.live_gids(),
            "joined": joined if joined.size else None, "left": left if left.size else None,
            "left_return": returns.astype(np.float32) if left.size else None,
            "act_ms": (a1 - a0) * 1e3, "advance_ms": (time.perf_counter() - t0) * 1e3,
            "t_act": [a0, a1], "t_in": t0, "t_out": time.perf_counter(),
        })

    def _actions(self, c: dict, tick: int) -> list[np.ndarray]:
        ids, over = c.get("ids"), c.get("actions")
        if ids is not None and len(ids):
            check_overrides(ids, over, self.live_gids(), self.action_space, f"EnvWorker {self.index}")
        pred = self._predictions(c.get("pred"))
        acts, offset = [], 0
        for e in self.envs:
            n = e.gids.size
            info = {"gids": e.gids, "pred_reward": pred[0][offset:offset + n],
                    "pred_cont": pred[1][offset:offset + n]}
            a = np.asarray(e.policy.act(e.obs, e.gids, tick))
            if ids is not None and len(ids):
                hit = np.isin(e.gids, ids)
                if hit.any():
                    a = a.copy()
                    order = {int(g): i for i, g in enumerate(ids)}
                    rows = np.flatnonzero(hit)
                    a[rows] = over[[order[int(g)] for g in e.gids[rows]]].astype(a.dtype)
            e.last_info = info
            acts.append(a)
            offset += n
        return acts

    def _predictions(self, blob) -> tuple[np.ndarray, np.ndarray]:
        """The engine's predictions for the current rows (NaN for agents it has not seen)."""
        n = self._pred_index.size
        rew, cont = np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32)
        if blob is None or n == 0:
            return rew, cont
        p = codec.unpackb(blob)  # float32 [2, n]: reward, cont
        have = self._pred_index >= 0
        rew[have] = p[0][self._pred_index[have]]
        cont[have] = p[1][self._pred_index[have]]
        return rew, cont


# --------------------------------------------------------------------------------------------
class EngineWorker:
    """An Engine, the slot pools of its EnvWorkers, and the agents dreaming on it.

    Args:
        spec: {"index", "model" (see `load_model`), "capacity", "device", "sample", "seed",
            "decode", "policy", "torch_threads", "impl" (see `Engine`)}.
    """

    def __init__(self, spec: dict):
        import torch

        from worldssm.engine.engine import Engine

        self.index = int(spec["index"])
        threads = int(spec.get("torch_threads") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        device = spec.get("device", "cpu")
        self.engine = Engine(load_model(spec["model"]), int(spec["capacity"]), device=device,
                             sample=bool(spec.get("sample", False)), seed=int(spec.get("seed", 0)),
                             impl=spec.get("impl", "auto"))
        self.seed = int(spec.get("seed", 0))
        self.decode = bool(spec.get("decode", True))
        self.policy = make_policy(spec.get("policy", "random"), self.engine.action_space,
                                  seed=self.seed * 7919 + self.index)
        self.tick = -1
        self._dream_clear()

    def _dream_clear(self) -> None:
        self.d_gids = np.zeros(0, np.int64)
        self.d_slots = np.zeros(0, np.int64)
        self.d_obs = np.zeros((0, *self.engine.obs_shape), np.float32)
        self.d_fresh = np.zeros(0, bool)  # joined; its start observation is not observed yet

    def reserve(self, n: int) -> np.ndarray:
        """Slots for an EnvWorker's agents (owned for the life of the simulation)."""
        return self.engine.join(n)

    def spaces(self) -> bytes:
        """The model's spaces, and which step the engine runs (`Engine.impl`) on which device."""
        return codec.packb({"obs": self.engine.obs_space, "action": self.engine.action_space,
                            "impl": self.engine.impl, "device": str(self.engine.device)})

    # ----- membership of dream agents -----------------------------------------------------------
    def _check_membership(self, joins, leave) -> None:
        for j in joins:
            gids, obs = j["gids"], j["obs"]
            if not isinstance(obs, np.ndarray) or obs.shape != (len(gids), *self.engine.obs_shape):
                raise TickRejected(f"EngineWorker {self.index}: start observations must have shape "
                                   f"{(len(gids), *self.engine.obs_shape)}")
            if np.isin(gids, self.d_gids).any():
                raise TickRejected(f"EngineWorker {self.index}: a joining agent id is taken")
        need = sum(len(j["gids"]) for j in joins)
        freed = int(np.isin(self.d_gids, leave).sum()) if leave is not None and len(leave) else 0
        if need > self.engine.slab.num_free + freed:  # leaves are applied before joins
            raise TickRejected(f"EngineWorker {self.index}: {need} agents cannot join, "
                               f"{self.engine.slab.num_free} slots free and {freed} leaving")
        if leave is not None and len(leave) and not np.isin(leave, self.d_gids).all():
            raise TickRejected(f"EngineWorker {self.index}: leaving agents are not dreaming here")

    def apply_membership(self, joins, leave) -> None:
        if leave is not None and len(leave):
            gone = np.isin(self.d_gids, leave)
            self.engine.leave(self.d_slots[gone])
            keep = ~gone
            self.d_gids, self.d_slots = self.d_gids[keep], self.d_slots[keep]
            self.d_obs, self.d_fresh = self.d_obs[keep], self.d_fresh[keep]
        for j in joins:
            n = len(j["gids"])
            self.d_gids = np.concatenate([self.d_gids, np.asarray(j["gids"], np.int64)])
            self.d_slots = np.concatenate([self.d_slots, self.engine.join(n)])
            self.d_obs = np.concatenate([self.d_obs, j["obs"].astype(np.float32)])
            self.d_fresh = np.concatenate([self.d_fresh, np.ones(n, bool)])

    # ----- the tick -----------------------------------------------------------------------------
    def step(self, ctrl: bytes, *env_payloads: bytes) -> bytes:
        t0 = time.perf_counter()
        c = codec.unpackb(ctrl)
        tick = int(c["tick"])
        payloads = [codec.unpackb(p) for p in env_payloads]
        joins, leave = c.get("join") or [], c.get("leave")
        self._check_membership(joins, leave)
        ids, over = c.get("ids"), c.get("actions")
        if ids is not None and len(ids):
            live = self.d_gids[~np.isin(self.d_gids, leave)] if leave is not None else self.d_gids
            check_overrides(ids, over, live, self.engine.action_space, f"EngineWorker {self.index}")
        self.apply_membership(joins, leave)
        d_act = np.asarray(self.policy.act(self.d_obs, self.d_gids, tick)) if self.d_gids.size else None
        if ids is not None and len(ids):
            order = {int(g): i for i, g in enumerate(ids)}
            rows = np.flatnonzero(np.isin(self.d_gids, ids))
            d_act = d_act.copy()
            d_act[rows] = over[[order[int(g)] for g in self.d_gids[rows]]].astype(d_act.dtype)
        fresh = self.d_fresh
        o_slots = np.concatenate([p["slots"] for p in payloads]) if payloads else np.zeros(0, np.int64)
        t1 = time.perf_counter()
        rew = cont = np.zeros(0, np.float32)
        if payloads:  # one observe for every env agent of every EnvWorker feeding this engine
            out = self.engine.observe(
                o_slots, np.concatenate([p["obs"] for p in payloads]),
                np.concatenate([p["actions"] for p in payloads]),
                np.concatenate([p["resets"] for p in payloads]))
            rew, cont = out.reward.cpu().numpy(), out.cont.cpu().numpy()
        d_rew = np.empty(self.d_gids.size, np.float32)
        d_cont = np.empty(self.d_gids.size, np.float32)
        # Dream agents that just joined observe their start observation; the others imagine.
        for rows, verb in ((np.flatnonzero(fresh), "observe"), (np.flatnonzero(~fresh), "imagine")):
            if rows.size == 0:
                continue
            if verb == "observe":
                o = self.engine.observe(self.d_slots[rows], self.d_obs[rows], d_act[rows],
                                        np.ones(rows.size, bool), decode=self.decode)
            else:
                o = self.engine.imagine(self.d_slots[rows], d_act[rows], decode=self.decode)
            d_rew[rows], d_cont[rows] = o.reward.cpu().numpy(), o.cont.cpu().numpy()
            if self.decode:
                self.d_obs[rows] = o.obs.cpu().numpy()
        self.d_fresh = np.zeros(self.d_gids.size, bool)
        model_ms = (time.perf_counter() - t1) * 1e3
        preds, off = [], 0
        for p in payloads:
            n = p["slots"].size
            preds.append(codec.packb(np.stack([rew[off:off + n], cont[off:off + n]]).astype(np.float32, copy=False)))
            off += n
        self.tick = tick
        snap = self.snapshot() if c.get("snapshot") else None
        return codec.packb({
            "index": self.index, "tick": tick, "preds": preds,
            "dream": {"gids": self.d_gids, "reward": d_rew, "cont": d_cont} if self.d_gids.size else None,
            "model_ms": model_ms, "engine_ms": (time.perf_counter() - t0) * 1e3, "snapshot": snap,
            "t_in": t0, "t_out": time.perf_counter(),
        })

    # ----- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """Everything needed to rebuild this worker at the current tick, as msgpack bytes."""
        return codec.packb({
            "tick": self.tick, "slab": self.engine.snapshot(), "rng": self.engine.rng_state(),
            "dream": {"gids": self.d_gids, "slots": self.d_slots, "obs": self.d_obs, "fresh": self.d_fresh},
        })

    def restore(self, data: bytes) -> int:
        """Load `snapshot` bytes into a fresh worker; returns the snapshot's tick."""
        doc = codec.unpackb(data)
        owned = self.engine.slab.owned_slots()
        if owned.size:
            self.engine.leave(owned)
        self.engine.restore(doc["slab"], "same")
        self.engine.set_rng_state(doc["rng"])
        d = doc["dream"]
        self.d_gids, self.d_slots = d["gids"], d["slots"]
        self.d_obs, self.d_fresh = d["obs"], d["fresh"]
        self.tick = int(doc["tick"])
        return self.tick


# --------------------------------------------------------------------------------------------
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


class _Shell:
    """What both actor shells share: liveness, and Compiled Graph thread pinning (the graph's
    thread pins itself to a core on its next tick; see `executors.CompiledExecutor` for why and
    which core)."""

    def __init__(self, worker):
        self.worker = worker
        self._pin_cpu: int | None = None

    def ping(self) -> int:
        return self.worker.tick

    def pin_graph_thread(self, cpu: int | None) -> int:
        """The thread that runs the next tick (a Compiled Graph's) pins itself to `cpu`."""
        self._pin_cpu = None if cpu is None else int(cpu)
        return -1 if cpu is None else int(cpu)

    def _apply_pin(self) -> None:
        if self._pin_cpu is not None:
            pin_thread(self._pin_cpu)
            self._pin_cpu = None


class EnvShell(_Shell):
    """Bytes-in, bytes-out face of an EnvWorker: what `actors.EnvActor` runs under Ray."""

    def __init__(self, spec: bytes):
        super().__init__(EnvWorker(codec.unpackb(spec)))

    def act(self, ctrl: bytes) -> bytes:
        self._apply_pin()
        return self.worker.act(ctrl)

    def step(self, ctrl: bytes) -> tuple[bytes, bytes]:
        """`act` then `advance` in one call: (payload for the EngineWorker, report). The plain
        executor's form: one call per EnvActor and tick (each Ray call costs more than the env
        step that overlapping would hide), and a Compiled Graph's for an EnvActor that shares its
        core with an EngineActor."""
        self._apply_pin()
        payload = self.worker.act(ctrl)
        return payload, self.worker.advance()

    def advance(self, *acted: bytes) -> bytes:
        """`acted`: the payloads of this EnvActor's act and of those it waits for (ordering only)."""
        return self.worker.advance()

    def live_gids(self) -> bytes:
        return codec.packb(self.worker.live_gids())

    def spaces(self) -> bytes:
        return codec.packb({"obs": self.worker.obs_space, "action": self.worker.action_space})

    def engine_restored(self, snapshot_tick: int) -> int:
        return self.worker.engine_restored(snapshot_tick)


class EngineShell(_Shell):
    """Bytes-in, bytes-out face of an EngineWorker: what `actors.EngineActor` runs under Ray."""

    def __init__(self, spec: bytes):
        super().__init__(EngineWorker(codec.unpackb(spec)))

    def tick(self, ctrl: bytes, *env_payloads: bytes) -> bytes:
        self._apply_pin()
        return self.worker.step(ctrl, *env_payloads)

    def reserve(self, n: int) -> bytes:
        return codec.packb(self.worker.reserve(n))

    def spaces(self) -> bytes:
        return self.worker.spaces()

    def snapshot(self) -> bytes:
        return self.worker.snapshot()

    def restore(self, data: bytes) -> int:
        return self.worker.restore(data)

    def apply_membership(self, ops: bytes) -> int:
        """Replay dream joins and leaves logged since a snapshot: [{"join", "leave"}, ...]."""
        ops = codec.unpackb(ops)
        for op in ops:
            self.worker._check_membership(op.get("join") or [], op.get("leave"))
            self.worker.apply_membership(op.get("join") or [], op.get("leave"))
        return len(ops)
