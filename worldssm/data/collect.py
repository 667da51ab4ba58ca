"""Collecting rollouts into rollout shards: Gymnasium ids (one env copy per agent), and the
multi-agent envs of `worldssm.envs` through their batched API (agents joining and leaving).

`steps` counts ticks per agent: every tick each live agent takes one action. An episode of
L actions is recorded as L + 1 steps (its final observation is its own is_last step), so a run
records slightly more steps than N * steps.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from worldssm.data.format import (
    SHARD_SUFFIX,
    STEP_FIELDS,
    ShardWriter,
    make_header,
    space_step_layout,
    space_to_dict,
)
from worldssm.errors import WorldssmError

POLICIES = ("random",)
# Policies of the batched path; None picks "greedy" for swarm envs and "random" otherwise.
BATCHED_POLICIES = ("greedy", "random")
GREEDY_NOISE = 0.1
DEFAULT_SHARD_STEPS = 50_000
DEFAULT_CHUNK_STEPS = 1_000


class EpisodeRecorder:
    """Buffers per-agent episode segments from batched ticks and hands them to a sink.

    Agents are slot indices 0..A-1 named by `agent_ids`. Each `add` call gives one step for a
    subset of slots. A slot's buffered segment becomes a steps record when its episode ends
    (is_last), when it reaches `chunk_steps`, or on `flush()`. Episode numbers are assigned per
    agent, counting from 0, at every is_first step.

    Args:
        agent_ids: A names; record "agent" fields.
        observation_space: SPACE dict of observations.
        action_space: SPACE dict of actions.
        sink: called with each finished steps record (e.g. `ShardWriter.write`).
        chunk_steps: longest segment kept in memory per agent.
    """

    def __init__(
        self,
        agent_ids: Sequence[str],
        observation_space: dict,
        action_space: dict,
        sink: Callable[[dict], None],
        chunk_steps: int = DEFAULT_CHUNK_STEPS,
    ):
        if chunk_steps < 1:
            raise ValueError(f"chunk_steps must be >= 1, got {chunk_steps}")
        self.agent_ids = list(agent_ids)
        self.sink = sink
        self.chunk_steps = chunk_steps
        self.layout = {
            "obs": space_step_layout(observation_space),
            "action": space_step_layout(action_space),
            "reward": ((), np.dtype(np.float32)),
            "is_first": ((), np.dtype(bool)),
            "is_last": ((), np.dtype(bool)),
            "is_terminal": ((), np.dtype(bool)),
        }
        n = len(self.agent_ids)
        self._buffers: list[dict[str, list]] = [_empty_buffer() for _ in range(n)]
        self._episode = [-1] * n
        self._open = [False] * n
        self.episodes_started = 0
        self.episodes_finished = 0
        self.pending_steps = 0

    def add(self, slots, obs, action, reward, is_first, is_last, is_terminal) -> None:
        """Record one step for each slot in `slots`.

        Args:
            slots: int [A'] slot indices, each at most once.
            obs: [A', *obs_shape]; action: [A', *act_shape] (discrete: int [A']).
            reward: float [A']; is_first, is_last, is_terminal: bool [A'].

        Raises:
            ValueError: shapes disagree with the spaces, or flags break the episode order
                (a step of an agent with no open episode that is not is_first, or is_first while
                an episode is still open).
        """
        slots = np.asarray(slots, dtype=np.int64)
        batch = {
            "obs": obs,
            "action": action,
            "reward": reward,
            "is_first": is_first,
            "is_last": is_last,
            "is_terminal": is_terminal,
        }
        for name, (shape, dtype) in self.layout.items():
            arr = np.asarray(batch[name], dtype=dtype)
            if arr.shape != (len(slots), *shape):
                raise ValueError(f"{name} has shape {arr.shape}, expected {(len(slots), *shape)}")
            batch[name] = arr
        for i, slot in enumerate(slots.tolist()):
            self._add_one(slot, {name: batch[name][i] for name in STEP_FIELDS})

    def _add_one(self, slot: int, step: dict) -> None:
        if step["is_first"]:
            if self._open[slot]:
                raise ValueError(
                    f"agent {self.agent_ids[slot]!r}: is_first while an episode is open"
                )
            self._open[slot] = True
            self._episode[slot] += 1
            self.episodes_started += 1
        elif not self._open[slot]:
            raise ValueError(
                f"agent {self.agent_ids[slot]!r}: step outside an episode (no is_first)"
            )
        if step["is_terminal"] and not step["is_last"]:
            raise ValueError(f"agent {self.agent_ids[slot]!r}: is_terminal without is_last")
        buf = self._buffers[slot]
        for name in STEP_FIELDS:
            buf[name].append(step[name])
        self.pending_steps += 1
        if step["is_last"]:
            self._open[slot] = False
            self.episodes_finished += 1
            self._flush_slot(slot)
        elif len(buf["reward"]) >= self.chunk_steps:
            self._flush_slot(slot)

    def _flush_slot(self, slot: int) -> None:
        buf = self._buffers[slot]
        count = len(buf["reward"])
        if count == 0:
            return
        record = {"kind": "steps", "agent": self.agent_ids[slot], "episode": self._episode[slot]}
        for name in STEP_FIELDS:
            record[name] = np.stack(buf[name])
        self._buffers[slot] = _empty_buffer()
        self.pending_steps -= count
        self.sink(record)

    def flush(self) -> None:
        """Hand every buffered segment to the sink (open episodes continue in later records)."""
        for slot in range(len(self.agent_ids)):
            self._flush_slot(slot)


def _empty_buffer() -> dict[str, list]:
    return {name: [] for name in STEP_FIELDS}


class _ShardRoller:
    """Owns the current ShardWriter and rolls over to a new numbered shard on request."""

    def __init__(self, out_dir: Path, header: dict):
        self.out_dir = out_dir
        self.header = header
        self.paths: list[Path] = []
        self.writer: ShardWriter | None = None
        self.total_steps = 0

    def write(self, record: dict) -> None:
        if self.writer is None:
            name = f"shard-{len(self.paths):05d}{SHARD_SUFFIX}"
            self.writer = ShardWriter(self.out_dir / name, self.header)
        self.writer.write(record)
        self.total_steps += len(record["reward"])

    @property
    def steps_in_shard(self) -> int:
        return 0 if self.writer is None else self.writer.num_steps

    def close_shard(self) -> None:
        if self.writer is not None:
            self.paths.append(self.writer.close())
            self.writer = None

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def _make_envs(env_id: str, n_agents: int) -> list:
    import gymnasium

    try:
        envs = [gymnasium.make(env_id) for _ in range(n_agents)]
    except gymnasium.error.Error as exc:
        raise WorldssmError(f"cannot make environment {env_id!r}: {exc}") from exc
    return envs


def _as_obs(obs, layout: tuple[tuple[int, ...], np.dtype], env_id: str) -> np.ndarray:
    shape, dtype = layout
    arr = np.asarray(obs)
    if arr.shape != shape:
        raise WorldssmError(
            f"{env_id} returned an observation of shape {arr.shape}, its space says {shape}"
        )
    return arr.astype(dtype, copy=False)


def collect(
    env_id: str,
    n_agents: int,
    steps: int,
    out_dir,
    seed: int = 0,
    policy: str | None = None,
    shard_steps: int = DEFAULT_SHARD_STEPS,
    progress: Callable[[int], None] | None = None,
    env_kwargs: dict | None = None,
) -> dict:
    """Run N agents of `env_id` and write their rollouts as shards.

    `env_id` is either a name of `worldssm.envs.names()` or `pettingzoo/<family>/<env>`
    (collected through the batched API, see `collect_batched`), or a Gymnasium id: then N copies
    of `gymnasium.make(env_id)` act as N agents. Agent i's copy is reset with seed `seed + i` at
    its first reset and without a seed afterwards (its own RNG continues); its action space is
    seeded with `seed + i` too. An ended episode's final observation is recorded as an is_last
    step with a zero action, then the copy is reset.

    Shards `shard-00000.wsr`, ... roll over once `shard_steps` steps have been recorded into the
    current one, and each appears only when complete. An episode cut by the end of collection is
    stored as a partial episode (no is_last).

    Args:
        env_id: see above; Gymnasium envs need Box or Discrete observation and action spaces.
        n_agents: N, agents at reset (env copies for Gymnasium ids; ignored by PettingZoo envs,
            which fix their own agents).
        steps: ticks per agent (each tick every live agent acts once).
        out_dir: directory for the shards; created if missing, must hold no *.wsr yet.
        seed: base seed (see above).
        policy: None (the env's default: "greedy" for swarm envs, else "random"), "random"
            (uniform over the action space), or "greedy" (swarm envs only).
        shard_steps: recorded steps per shard before rolling over.
        progress: optional callable, called with 1 after each tick (e.g. tqdm's update).
        env_kwargs: extra keyword arguments for `worldssm.envs.make` (batched path only), e.g.
            SwarmConfig fields.

    Returns:
        Summary dict: out_dir, shards (paths as str), steps (recorded), ticks, agents,
        episodes (started), complete_episodes; the batched path adds resets.

    Raises:
        WorldssmError: unknown env, unsupported spaces, unknown policy, non-empty out_dir.
        ValueError: non-positive n_agents, steps or shard_steps.
    """
    for name, value in (("n_agents", n_agents), ("steps", steps), ("shard_steps", shard_steps)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if is_batched_env(env_id):
        return collect_batched(env_id, n_agents, steps, out_dir, seed, policy, shard_steps,
                               progress, env_kwargs)
    if env_kwargs:
        raise WorldssmError(
            f"env_kwargs are only supported for worldssm.envs names, not {env_id!r}"
        )
    policy = "random" if policy is None else policy
    if policy not in POLICIES:
        raise WorldssmError(f"unknown policy {policy!r}; choose one of {list(POLICIES)}")
    out_dir = _empty_out_dir(out_dir)
    envs = _make_envs(env_id, n_agents)
    try:
        return _collect(envs, env_id, steps, out_dir, seed, policy, shard_steps, progress)
    finally:
        for env in envs:
            env.close()


def _empty_out_dir(out_dir) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.glob(f"*{SHARD_SUFFIX}")):
        raise WorldssmError(
            f"{out_dir} already holds *{SHARD_SUFFIX} shards; choose an empty directory"
        )
    return out_dir


def _collect(envs, env_id, steps, out_dir, seed, policy, shard_steps, progress) -> dict:
    n = len(envs)
    obs_space = space_to_dict(envs[0].observation_space)
    act_space = space_to_dict(envs[0].action_space)
    agent_ids = [f"agent_{i}" for i in range(n)]
    meta = {
        "seed": seed,
        "policy": policy,
        "n_agents": n,
        "env_seeds": [seed + i for i in range(n)],
        "worldssm_version": importlib.metadata.version("worldssm"),
    }
    roller = _ShardRoller(out_dir, make_header(env_id, obs_space, act_space, agent_ids, meta))
    recorder = EpisodeRecorder(agent_ids, obs_space, act_space, roller.write)
    try:
        _run_ticks(envs, env_id, steps, seed, recorder, roller, shard_steps, progress)
        recorder.flush()
        roller.close_shard()
    except BaseException:
        # The current shard is incomplete: drop it; finished shards stay valid.
        roller.abort()
        raise
    return {
        "out_dir": str(out_dir),
        "shards": [str(p) for p in roller.paths],
        "steps": roller.total_steps,
        "ticks": steps,
        "agents": n,
        "episodes": recorder.episodes_started,
        "complete_episodes": recorder.episodes_finished,
    }


def _run_ticks(envs, env_id, steps, seed, recorder, roller, shard_steps, progress) -> None:
    n = len(envs)
    obs_layout, act_layout = recorder.layout["obs"], recorder.layout["action"]
    all_slots = np.arange(n)
    for i, env in enumerate(envs):
        env.action_space.seed(seed + i)
    obs = np.stack(
        [_as_obs(env.reset(seed=seed + i)[0], obs_layout, env_id) for i, env in enumerate(envs)]
    )
    prev_reward = np.zeros(n, np.float32)
    is_first = np.ones(n, bool)
    no = np.zeros(n, bool)
    for _ in range(steps):
        action = np.stack([np.asarray(env.action_space.sample(), act_layout[1]) for env in envs])
        recorder.add(all_slots, obs, action, prev_reward, is_first, no, no)
        results = [
            env.step(a.item() if a.ndim == 0 else a) for env, a in zip(envs, action, strict=True)
        ]
        next_obs = np.stack([_as_obs(r[0], obs_layout, env_id) for r in results])
        reward = np.array([r[1] for r in results], np.float32)
        terminated = np.array([r[2] for r in results], bool)
        ended = terminated | np.array([r[3] for r in results], bool)
        done = np.flatnonzero(ended)
        if len(done):
            zeros = np.zeros((len(done), *act_layout[0]), act_layout[1])
            yes = np.ones(len(done), bool)
            recorder.add(done, next_obs[done], zeros, reward[done], ~yes, yes, terminated[done])
            for i in done.tolist():
                next_obs[i] = _as_obs(envs[i].reset()[0], obs_layout, env_id)
        obs, prev_reward, is_first = (
            next_obs,
            np.where(ended, 0.0, reward).astype(np.float32),
            ended,
        )
        if roller.steps_in_shard + recorder.pending_steps >= shard_steps:
            recorder.flush()
            roller.close_shard()
        if progress is not None:
            progress(1)


def is_batched_env(env_id: str) -> bool:
    """Whether `collect` takes `env_id` through `worldssm.envs.make(..., api="batched")`."""
    from worldssm import envs

    return env_id in envs.names() or env_id.startswith(envs.registry.PETTINGZOO_PREFIX)


class BatchedEpisodeRecorder:
    """Buffers ticks of a batched env and cuts them into per-(agent, episode) steps records.

    Agents are int ids (slot indices into per-agent state arrays, grown on demand). Each `add`
    appends one step for each of its ids as arrays, without a Python loop per agent; `flush()`
    sorts the buffered steps by (agent, episode), keeping time order, and returns one steps
    record per piece. Episode numbers count per agent id from 0 at every is_first, across env
    resets, so (agent, episode) stays unique when an env reuses ids after a reset.

    Args:
        observation_space: SPACE dict of observations.
        action_space: SPACE dict of actions.
        agent_name: maps an int id to the record's "agent" string.
    """

    def __init__(self, observation_space: dict, action_space: dict, agent_name):
        self.agent_name = agent_name
        self.layout = {
            "obs": space_step_layout(observation_space),
            "action": space_step_layout(action_space),
            "reward": ((), np.dtype(np.float32)),
            "is_first": ((), np.dtype(bool)),
            "is_last": ((), np.dtype(bool)),
            "is_terminal": ((), np.dtype(bool)),
        }
        self._open = np.zeros(0, bool)  # [S] an episode of this id is open
        self._episode = np.zeros(0, np.int64)  # [S] episodes started by this id
        self._chunks: list[dict] = []
        self.pending_steps = 0
        self.episodes_started = 0
        self.episodes_finished = 0

    def _grow(self, top: int) -> None:
        size = self._open.shape[0]
        if top < size:
            return
        extra = max(top + 1, 2 * size) - size
        self._open = np.concatenate([self._open, np.zeros(extra, bool)])
        self._episode = np.concatenate([self._episode, np.zeros(extra, np.int64)])

    def add(self, ids, obs, action, reward, is_first, is_last, is_terminal) -> None:
        """Record one step for each agent id in `ids`.

        Args:
            ids: int [A'] agent ids, each at most once, non-negative.
            obs: [A', *obs_shape]; action: [A', *act_shape] (discrete: int [A']).
            reward: float [A']; is_first, is_last, is_terminal: bool [A'].

        Raises:
            ValueError: shapes disagree with the spaces, repeated or negative ids, or flags
                that break the episode order (see `EpisodeRecorder.add`); nothing is recorded.
        """
        ids = np.asarray(ids, dtype=np.int64)
        batch = {"obs": obs, "action": action, "reward": reward, "is_first": is_first,
                 "is_last": is_last, "is_terminal": is_terminal}
        for name, (shape, dtype) in self.layout.items():
            arr = np.asarray(batch[name], dtype=dtype)
            if arr.shape != (len(ids), *shape):
                raise ValueError(f"{name} has shape {arr.shape}, expected {(len(ids), *shape)}")
            batch[name] = arr
        if len(ids) == 0:
            return
        if ids.min() < 0 or np.unique(ids).shape[0] != ids.shape[0]:
            raise ValueError("ids must be distinct non-negative agent ids")
        self._grow(int(ids.max()))
        first, last = batch["is_first"], batch["is_last"]
        was_open = self._open[ids]
        for bad, what in ((first & was_open, "is_first while an episode is open"),
                          (~first & ~was_open, "step outside an episode (no is_first)"),
                          (batch["is_terminal"] & ~last, "is_terminal without is_last")):
            if bad.any():
                agent = self.agent_name(int(ids[np.argmax(bad)]))
                raise ValueError(f"agent {agent!r}: {what}")
        self._episode[ids[first]] += 1
        self._open[ids[first]] = True
        self._open[ids[last]] = False
        batch["agent"] = ids
        batch["episode"] = self._episode[ids] - 1  # [A']
        self._chunks.append(batch)
        self.pending_steps += len(ids)
        self.episodes_started += int(first.sum())
        self.episodes_finished += int(last.sum())

    def flush(self) -> list[dict]:
        """Return the buffered steps as steps records, sorted by agent id then episode.

        Open episodes continue in the records of later flushes.
        """
        if not self._chunks:
            return []
        cat = {k: np.concatenate([c[k] for c in self._chunks]) for k in self._chunks[0]}
        self._chunks = []
        self.pending_steps = 0
        key = cat["agent"] * (int(cat["episode"].max()) + 1) + cat["episode"]  # [N]
        # Stable, so each piece keeps its steps in time order.
        order = np.argsort(key, kind="stable")
        key = key[order]
        fields = {name: cat[name][order] for name in STEP_FIELDS}
        agent, episode = cat["agent"][order], cat["episode"][order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        ends = np.r_[starts[1:], len(key)]
        records = []
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            record = {"kind": "steps", "agent": self.agent_name(int(agent[a])),
                      "episode": int(episode[a])}
            for name in STEP_FIELDS:
                record[name] = fields[name][a:b]
            records.append(record)
        return records


def _write_shard(out_dir: Path, index: int, header: dict, records: list[dict]) -> Path:
    """Write one shard whose header lists exactly the agents of `records` (in record order)."""
    agents = list(dict.fromkeys(r["agent"] for r in records))
    header = {**header, "agent_ids": agents}
    with ShardWriter(out_dir / f"shard-{index:05d}{SHARD_SUFFIX}", header) as writer:
        for record in records:
            writer.write(record)
    return writer.path


class _BatchedRandom:
    """Uniform random actions for all live agents of a batched env (Discrete or bounded Box)."""

    def __init__(self, env, seed: int):
        self.env = env
        self.space = env.single_action_space
        self.rng = np.random.default_rng(seed)
        if not hasattr(self.space, "n") and not np.all(np.isfinite(self.space.low)
                                                       & np.isfinite(self.space.high)):
            raise WorldssmError(f"random policy needs a Discrete or bounded Box, got {self.space}")

    def act(self, obs=None, info=None) -> np.ndarray:
        n = self.env.num_agents
        if hasattr(self.space, "n"):
            start = int(getattr(self.space, "start", 0))
            return self.rng.integers(start, start + int(self.space.n), n, dtype=np.int64)
        low, high = self.space.low, self.space.high
        return self.rng.uniform(low, high, (n, *self.space.shape)).astype(self.space.dtype)


def _make_policy(env, name: str | None, seed: int):
    from worldssm.envs.swarm import GreedyFoodSeeker, RandomPolicy, SwarmEnv

    swarm = isinstance(env, SwarmEnv)
    name = ("greedy" if swarm else "random") if name is None else name
    if name not in BATCHED_POLICIES:
        raise WorldssmError(f"unknown policy {name!r}; choose one of {list(BATCHED_POLICIES)}")
    if name == "greedy":
        if not swarm:
            raise WorldssmError("the greedy policy needs a swarm env (it reads food positions)")
        return name, GreedyFoodSeeker(env, noise=GREEDY_NOISE, seed=seed)
    return name, RandomPolicy(env, seed=seed) if swarm else _BatchedRandom(env, seed)


def collect_batched(env_id, n_agents, steps, out_dir, seed=0, policy=None,
                    shard_steps=DEFAULT_SHARD_STEPS, progress=None, env_kwargs=None) -> dict:
    """Collect a `worldssm.envs` env through its batched API (see `collect` for the arguments).

    Every tick all live agents act at once. Rows that ended get their final observation recorded
    as an is_last step (is_terminal when terminated, zero action); agents that joined
    (`info["spawned_ids"]`) start an episode at `info["spawned_obs"]`. When no agent is left the
    env is reset (ids restart; episode numbers continue per id, so (agent, episode) stays
    unique). The env is reset with `seed` once; the policy is seeded with `seed`. Agents that
    join on the very last tick never act and are not recorded. Each shard's header lists the
    agents recorded in it.
    """
    from worldssm import envs

    out_dir = _empty_out_dir(out_dir)
    kwargs = dict(env_kwargs or {})
    if not env_id.startswith(envs.registry.PETTINGZOO_PREFIX):
        kwargs.setdefault("n_agents", n_agents)
    try:
        env = envs.make(env_id, api="batched", **kwargs)
    except (ValueError, TypeError) as exc:
        raise WorldssmError(f"cannot make environment {env_id!r}: {exc}") from exc
    try:
        policy_name, actor = _make_policy(env, policy, seed)
        obs_space = space_to_dict(env.single_observation_space)
        act_space = space_to_dict(env.single_action_space)
        meta = {"seed": seed, "policy": policy_name, "n_agents": n_agents, "api": "batched",
                "env_kwargs": {k: v if isinstance(v, int | float | str) else repr(v)
                               for k, v in kwargs.items()},
                "worldssm_version": importlib.metadata.version("worldssm")}
        if policy_name == "greedy":
            meta["noise"] = GREEDY_NOISE
        header = make_header(env_id, obs_space, act_space, [], meta)
        recorder = BatchedEpisodeRecorder(obs_space, act_space, env.agent_name)
        paths: list[Path] = []

        def roll() -> None:
            records = recorder.flush()
            if records:
                paths.append(_write_shard(out_dir, len(paths), header, records))

        total, resets = _run_batched_ticks(env, actor, steps, seed, recorder, shard_steps, roll,
                                           progress)
        roll()
    finally:
        env.close()
    return {"out_dir": str(out_dir), "shards": [str(p) for p in paths], "steps": total,
            "ticks": steps, "agents": n_agents, "episodes": recorder.episodes_started,
            "complete_episodes": recorder.episodes_finished, "resets": resets}


def _run_batched_ticks(env, actor, steps, seed, recorder, shard_steps, roll, progress):
    """The tick loop of `collect_batched`; returns (steps recorded, env resets)."""
    act_shape, act_dtype = recorder.layout["action"]
    total = resets = 0
    obs, info = env.reset(seed=seed)
    ids = info["agent_ids"]  # [A]
    prev_reward = np.zeros(len(ids), np.float32)
    is_first = np.ones(len(ids), bool)
    for _ in range(steps):
        if len(ids) == 0:
            obs, info = env.reset()
            ids, resets = info["agent_ids"], resets + 1
            prev_reward, is_first = np.zeros(len(ids), np.float32), np.ones(len(ids), bool)
        action = np.asarray(actor.act(obs, info))
        no = np.zeros(len(ids), bool)
        recorder.add(ids, obs, action, prev_reward, is_first, no, no)
        next_obs, reward, terminated, truncated, info = env.step(action)
        ended = terminated | truncated  # [A]
        done = np.flatnonzero(ended)
        yes = np.ones(len(done), bool)
        recorder.add(ids[done], next_obs[done], np.zeros((len(done), *act_shape), act_dtype),
                     reward[done], ~yes, yes, terminated[done])
        total += len(ids) + len(done)
        alive = ~ended
        spawned = info["spawned_ids"]  # [J]
        ids = np.concatenate([ids[alive], spawned])
        obs = np.concatenate([next_obs[alive], info["spawned_obs"]])
        prev_reward = np.concatenate([reward[alive], np.zeros(len(spawned), np.float32)])
        is_first = np.r_[np.zeros(int(alive.sum()), bool), np.ones(len(spawned), bool)]
        if recorder.pending_steps >= shard_steps:
            roll()
        if progress is not None:
            progress(1)
    return total, resets
