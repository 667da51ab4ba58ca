"""Collecting rollouts of a Gymnasium env, one env copy per agent, into rollout shards.

`steps` counts ticks per agent: every tick each of the N agents takes one action. An episode of
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
    policy: str = "random",
    shard_steps: int = DEFAULT_SHARD_STEPS,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Run N copies of `gymnasium.make(env_id)` as N agents and write their rollouts as shards.

    Agent i's env is reset with seed `seed + i` at its first reset and without a seed afterwards
    (its own RNG continues); its action space is seeded with `seed + i` too. An ended episode's
    final observation is recorded as an is_last step with a zero action, then the env is reset.
    Shards `shard-00000.wsr`, ... roll over once `shard_steps` steps have been recorded into the
    current one, and each appears only when complete. An episode cut by the end of collection is
    stored as a partial episode (no is_last).

    Args:
        env_id: a registered Gymnasium id with Box or Discrete observation and action spaces.
        n_agents: N, env copies stepped in lockstep.
        steps: ticks per agent (each tick every agent acts once).
        out_dir: directory for the shards; created if missing, must hold no *.wsr yet.
        seed: base seed (see above).
        policy: "random" (action_space.sample).
        shard_steps: recorded steps per shard before rolling over.
        progress: optional callable, called with 1 after each tick (e.g. tqdm's update).

    Returns:
        Summary dict: out_dir, shards (paths as str), steps (recorded), ticks, agents,
        episodes (started), complete_episodes.

    Raises:
        WorldssmError: unknown env, unsupported spaces, unknown policy, non-empty out_dir.
        ValueError: non-positive n_agents, steps or shard_steps.
    """
    for name, value in (("n_agents", n_agents), ("steps", steps), ("shard_steps", shard_steps)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if policy not in POLICIES:
        raise WorldssmError(f"unknown policy {policy!r}; choose one of {list(POLICIES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.glob(f"*{SHARD_SUFFIX}")):
        raise WorldssmError(
            f"{out_dir} already holds *{SHARD_SUFFIX} shards; choose an empty directory"
        )
    envs = _make_envs(env_id, n_agents)
    try:
        return _collect(envs, env_id, steps, out_dir, seed, policy, shard_steps, progress)
    finally:
        for env in envs:
            env.close()


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
