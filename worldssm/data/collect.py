"""Collecting rollouts into rollout shards, for every env name through one pipeline.

Any name `worldssm.envs.make` takes (swarm_v0, `pettingzoo/<family>/<env>`, any Gymnasium id)
is made with the batched API, the same adapter the simulator's EnvActors drive, and its live
agents act through an agent of `worldssm.agents` (by default "greedy" for swarm_v0, else
"random"). A Gymnasium id runs N copies as N agents; a copy whose episode ends restarts as a new
agent (`GymAgents`' default autoreset), so every agent id in the shards is one episode of one copy.

`steps` counts ticks: every tick each live agent takes one action. An episode of L actions is
recorded as L + 1 steps (its final observation is its own is_last step), so a run records
slightly more steps than N * steps.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from worldssm.data.format import (
    SHARD_SUFFIX,
    STEP_FIELDS,
    ShardWriter,
    make_header,
    max_record_steps,
    split_steps,
    temp_target,
)
from worldssm.errors import WorldssmError
from worldssm.locks import DirLock
from worldssm.spaces import space_step_layout, space_to_dict

DEFAULT_SHARD_STEPS = 50_000
_SHARD_NAME = re.compile(rf"shard-\d{{5,}}{re.escape(SHARD_SUFFIX)}")


def _agent_names() -> tuple:
    from worldssm.agents.registry import AGENTS

    return AGENTS


@dataclass(frozen=True)
class CollectConfig:
    """What `worldssm collect` records (the arguments of `collect` a user chooses)."""

    env: str  # swarm_v0, pettingzoo/<family>/<env>, or a Gymnasium id, e.g. Pendulum-v1
    agents: int | None = None  # agents at reset (env copies for Gymnasium ids); none: the env's own
    steps: int = 10_000  # ticks: each live agent acts once per tick; total steps ~ agents x steps
    seed: int = 0  # base seed (a Gymnasium id's copy i resets with seed + i; agents use seed)
    agent: str | None = None  # how agents act (worldssm.agents); none: greedy for swarm_v0, else random
    shard_steps: int = DEFAULT_SHARD_STEPS  # recorded steps per shard file before rolling over

    CHOICES: ClassVar[dict] = {"agent": _agent_names()}

    def __post_init__(self):
        if self.agents is not None and not self.agents >= 1:
            raise ValueError(f"CollectConfig.agents must be >= 1, got {self.agents}")
        for name in ("steps", "shard_steps"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"CollectConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"CollectConfig.seed must be in [0, 2**32), got {self.seed}")
        if self.agent is not None and self.agent not in self.CHOICES["agent"]:
            raise ValueError(f"CollectConfig.agent must be one of {self.CHOICES['agent']}, got {self.agent!r}")


class EpisodeRecorder:
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
                that break the episode order (a step of an agent with no open episode that is not is_first, is_first while an episode is open, is_terminal without is_last); nothing is recorded.
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


def write_shard(path: Path, header: dict, records: list[dict]) -> Path:
    """Write one shard (atomically: all of it or nothing) whose header lists exactly the agents
    of `records` (in record order).

    A record too long for the format's record size limit is written as consecutive pieces.
    """
    agents = list(dict.fromkeys(r["agent"] for r in records))
    header = {**header, "agent_ids": agents}
    max_steps = max_record_steps(header)
    with ShardWriter(path, header) as writer:
        for record in records:
            for piece in split_steps(record, max_steps):
                writer.write(piece)
    return writer.path


def collect(
    env_id: str,
    n_agents: int | None,
    steps: int,
    out_dir,
    seed: int = 0,
    agent: str | None = None,
    shard_steps: int = DEFAULT_SHARD_STEPS,
    progress: Callable[[int], None] | None = None,
    env_kwargs: dict | None = None,
    until_empty: bool = False,
) -> dict:
    """Run the agents of `env_id` for `steps` ticks and write their rollouts as shards.

    Every tick all live agents act at once. Rows that ended get their final observation recorded
    as an is_last step (is_terminal when terminated, zero action); agents that joined
    (`info["spawned_ids"]`) start an episode at `info["spawned_obs"]`. When no agent is left the
    env is reset (ids restart; episode numbers continue per id, so (agent, episode) stays
    unique). The env is reset with `seed` once (a Gymnasium id's copy i with `seed + i`); the
    agent is seeded with `seed`. Agents that join on the very last tick never act and are not
    recorded. Shards `shard-00000.wsr`, ... roll over once `shard_steps` steps are buffered and
    each appears only when complete; each shard's header lists the agents recorded in it. An
    episode cut by the end of collection is stored as a partial episode (no is_last). With
    `until_empty`, collection stops (before `steps`) the first time no agent is left instead of
    resetting the env: with `env_kwargs={"autoreset": "off"}` a Gymnasium id then records
    exactly one episode per copy (how `worldssm improve` scores and records a planner).

    The whole collection holds `out_dir`'s lock (`worldssm.locks.DirLock`, purpose
    "collecting"), so a second collection into it is refused naming this one. Under the lock,
    the hidden temp files of shards that a killed collection left behind are deleted first.

    Args:
        env_id: a name `worldssm.envs.make` takes; spaces must be Box or Discrete.
        n_agents: agents at reset (env copies for Gymnasium ids); None: the env's default (a
            PettingZoo env's own agents, one Gymnasium copy, swarm_v0's default).
        steps: ticks (each tick every live agent acts once).
        out_dir: directory for the shards; created if missing, must hold no *.wsr yet.
        seed: base seed (see above).
        agent: a name of `worldssm.agents.AGENTS`, or an agent object (anything with
            `act(obs, info)`, such as a planner); None: "greedy" for swarm_v0, else "random".
        shard_steps: recorded steps per shard before rolling over.
        progress: optional callable, called with 1 after each tick (e.g. tqdm's update).
        env_kwargs: extra keyword arguments for `worldssm.envs.make`.
        until_empty: stop when no agent is left (see above).

    Returns:
        Summary dict: out_dir, shards (paths as str), steps (recorded), ticks, agents,
        episodes (started), complete_episodes, resets (of the whole env), agent (the name),
        removed_temp_files (leftover temp files deleted at the start).

    Raises:
        WorldssmError: unknown env, unsupported spaces, unknown agent, non-empty out_dir, the
            env producing values its spaces forbid, a failing disk.
        DirectoryBusy: another process is collecting into out_dir (the message names it).
        ValueError: non-positive n_agents, steps or shard_steps.
    """
    for name, value in (("steps", steps), ("shard_steps", shard_steps)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise WorldssmError(f"{out_dir} is a file, not a directory")
    env, actor, name = _env_and_agent(env_id, n_agents, seed, agent, env_kwargs)  # nothing on disk yet
    try:
        with DirLock(out_dir, "collecting"):
            _refuse_shards(out_dir)
            removed = _remove_temp_files(out_dir)
            summary = _collect_locked(env, actor, name, env_id, n_agents, steps, out_dir, seed, shard_steps,
                                      progress, env_kwargs, until_empty)
    finally:
        env.close()
    return {**summary, "removed_temp_files": removed}


def _env_and_agent(env_id, n_agents, seed, agent, env_kwargs):
    """The batched env and the agent that acts in it, or a WorldssmError saying why not."""
    from worldssm import envs
    from worldssm.agents import make_agent

    try:
        env = envs.make(env_id, api="batched", n_agents=n_agents, **dict(env_kwargs or {}))
    except (ValueError, TypeError) as exc:
        raise WorldssmError(f"cannot make environment {env_id!r}: {exc}") from exc
    try:
        act_space = space_to_dict(env.single_action_space)
        space_to_dict(env.single_observation_space)
        if agent is not None and not isinstance(agent, str):
            if not callable(getattr(agent, "act", None)):
                raise WorldssmError(f"agent must be a name of {make_agent.__module__}.AGENTS or have an "
                                    f"act(obs, info) method; got {type(agent).__name__}")
            return env, agent, type(agent).__name__
        name = agent or ("greedy" if isinstance(env, envs.SwarmEnv) else "random")
        try:
            return env, make_agent(name, act_space, env=env, seed=seed), name
        except ValueError as exc:
            raise WorldssmError(str(exc)) from exc
    except BaseException:
        env.close()
        raise


def _collect_locked(env, actor, name, env_id, n_agents, steps, out_dir, seed, shard_steps, progress, env_kwargs,
                    until_empty=False):
    """The body of `collect`, run while holding out_dir's lock."""
    kwargs = dict(env_kwargs or {})
    obs_space = space_to_dict(env.single_observation_space)
    act_space = space_to_dict(env.single_action_space)
    meta = {"seed": seed, "agent": name, "n_agents": env.num_agents if n_agents is None else n_agents,
            "api": "batched",
            "env_kwargs": {k: v if isinstance(v, int | float | str) else repr(v) for k, v in kwargs.items()},
            "worldssm_version": importlib.metadata.version("worldssm")}
    header = make_header(env_id, obs_space, act_space, [], meta)
    recorder = EpisodeRecorder(obs_space, act_space, env.agent_name)
    paths: list[Path] = []

    def roll() -> None:
        records = recorder.flush()
        if records:
            paths.append(write_shard(out_dir / f"shard-{len(paths):05d}{SHARD_SUFFIX}", header, records))

    total, resets, agents, ticks = _run_ticks(env, actor, steps, seed, recorder, shard_steps, roll, progress,
                                              until_empty)
    roll()
    return {"out_dir": str(out_dir), "shards": [str(p) for p in paths], "steps": total,
            "ticks": ticks, "agents": agents, "episodes": recorder.episodes_started,
            "complete_episodes": recorder.episodes_finished, "resets": resets, "agent": name}


def _refuse_shards(out_dir: Path) -> None:
    if any(out_dir.glob(f"*{SHARD_SUFFIX}")):
        raise WorldssmError(
            f"{out_dir} already holds *{SHARD_SUFFIX} shards; choose an empty directory"
        )


def _remove_temp_files(out_dir: Path) -> int:
    """Delete the temp files of shards (`.shard-NNNNN.wsr.<hex>.tmp`) that a killed collection
    left; returns how many. Safe under the lock: no writer of ours is running here."""
    removed = 0
    for path in out_dir.glob(".shard-*.tmp"):
        target = temp_target(path.name)
        if target is None or not _SHARD_NAME.fullmatch(target) or path.is_symlink() or not path.is_file():
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise WorldssmError(f"cannot delete the leftover temp file {path}: {exc.strerror}") from exc
        removed += 1
    return removed


def _run_ticks(env, actor, steps, seed, recorder, shard_steps, roll, progress, until_empty=False):
    """The tick loop of `collect`; returns (steps recorded, env resets, agents at reset, ticks run)."""
    from worldssm.agents import AgentInfo

    act_shape, act_dtype = recorder.layout["action"]
    total = resets = 0
    obs, info = env.reset(seed=seed)
    ids = info["agent_ids"]  # [A]
    agents = len(ids)
    prev_reward = np.zeros(len(ids), np.float32)
    is_first = np.ones(len(ids), bool)
    tick = 0
    for tick in range(steps):
        if len(ids) == 0:
            if until_empty:
                return total, resets, agents, tick
            obs, info = env.reset()
            ids, resets = info["agent_ids"], resets + 1
            prev_reward, is_first = np.zeros(len(ids), np.float32), np.ones(len(ids), bool)
        action = np.asarray(actor.act(obs, AgentInfo(ids=ids, tick=tick, first=is_first)))
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
        obs = np.concatenate([next_obs[alive], info["spawned_obs"].astype(next_obs.dtype, copy=False)])
        prev_reward = np.concatenate([reward[alive], np.zeros(len(spawned), np.float32)])
        is_first = np.r_[np.zeros(int(alive.sum()), bool), np.ones(len(spawned), bool)]
        if recorder.pending_steps >= shard_steps:
            roll()
        if progress is not None:
            progress(1)
    return total, resets, agents, steps
