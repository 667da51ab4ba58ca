"""Loading rollout shards into episodes, splitting them, and observation statistics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldssm.data.format import MAGIC, SHARD_SUFFIX, STEP_FIELDS, iter_shard
from worldssm.spaces import spaces_differ
from worldssm.errors import DataError, WorldssmError


@dataclass(frozen=True)
class DatasetSpec:
    """What every shard of a dataset agrees on.

    Attributes:
        env_id: the Gymnasium id the rollouts came from.
        observation_space: SPACE dict (see worldssm.data.format).
        action_space: SPACE dict.
    """

    env_id: str
    observation_space: dict
    action_space: dict


class RolloutDataset:
    """Episodes of rollouts, each a dict of per-step arrays.

    Each episode dict holds the arrays of `STEP_FIELDS` (obs [T, *obs_shape], action
    [T, *act_shape], reward float32 [T], is_first / is_last / is_terminal bool [T]) plus
    "agent" (str) and "episode" (int). An episode is complete when it starts with is_first and
    ends with is_last; it is partial when the rollout was cut (collection stopped, or only some
    shards were loaded).

    Args:
        spec: the spaces and env id.
        episodes: list of episode dicts as above.
    """

    def __init__(self, spec: DatasetSpec, episodes: list[dict]):
        self.spec = spec
        self.episodes = episodes

    @classmethod
    def load(cls, path) -> RolloutDataset:
        """Load one `.wsr` file, or every `*.wsr` shard of a directory (sorted by name) and of its
        subdirectories one level down (each one collection, e.g. one `worldssm collect --out
        data/round-01` of `worldssm improve`; its agents are named "<subdirectory>/<agent>",
        so collections that reuse agent names stay apart).

        Hidden temp files of unfinished writers never match `*.wsr` and are ignored. Version-1
        shards load with a `LegacyShardWarning` each (see `worldssm.data.format`).

        Raises:
            WorldssmError: the path does not exist or holds no shards.
            DataError: a damaged shard (see `iter_shard`: a cut file, values the spaces forbid,
                ...), shards disagreeing on env_id or spaces, or records that do not stitch
                into episodes (a duplicate episode start, steps after is_last).
        """
        path = Path(path)
        if path.is_dir():
            shards = [("", s) for s in _shards_in(path)]
            for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
                shards += [(f"{sub.name}/", s) for s in _shards_in(sub)]
            if not shards:
                raise WorldssmError(f"no *{SHARD_SUFFIX} shards in {path} or its subdirectories")
        elif path.exists():
            shards = [("", path)]  # iter_shard refuses anything but a regular file, naming it
        else:
            raise WorldssmError(f"rollout path {path} does not exist")
        spec = None
        stitcher = _Stitcher()
        for prefix, shard in shards:
            for offset, record in iter_shard(shard):
                if record["kind"] == "header":
                    spec = _check_same_spec(spec, record, shard)
                else:
                    if prefix:
                        record["agent"] = prefix + record["agent"]
                    stitcher.add(record, shard, offset)
        return cls(spec, stitcher.episodes())

    @property
    def num_steps(self) -> int:
        """Total number of steps over all episodes."""
        return sum(len(ep["reward"]) for ep in self.episodes)

    def __len__(self) -> int:
        return len(self.episodes)

    def split(self, val_fraction: float, seed: int) -> tuple[RolloutDataset, RolloutDataset]:
        """Split by whole episodes into (train, val), deterministically for a seed.

        Val gets round(val_fraction * n) episodes, at least one when val_fraction > 0 and there
        are at least 2 episodes, and never all of them (train is never empty). Both keep the
        original episode order.

        Args:
            val_fraction: in [0, 1).
            seed: seeds the permutation that picks val episodes.
        """
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        n = len(self.episodes)
        if n == 0:
            raise ValueError("cannot split an empty dataset")
        n_val = int(round(val_fraction * n))
        if val_fraction > 0 and n >= 2:
            n_val = max(n_val, 1)
        n_val = min(n_val, n - 1)
        val_idx = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
        train = [ep for i, ep in enumerate(self.episodes) if i not in val_idx]
        val = [ep for i, ep in enumerate(self.episodes) if i in val_idx]
        return RolloutDataset(self.spec, train), RolloutDataset(self.spec, val)

    def obs_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and std of observations over all steps.

        Returns:
            (mean, std), float64 arrays of shape obs_shape; std is floored at 1e-6.
        """
        if self.num_steps == 0:
            raise ValueError("cannot compute observation statistics of an empty dataset")
        n = self.num_steps
        # Two passes (mean, then squared deviations) avoid the cancellation of E[x^2] - E[x]^2.
        mean = sum(ep["obs"].sum(axis=0, dtype=np.float64) for ep in self.episodes) / n
        var = sum(((ep["obs"] - mean) ** 2).sum(axis=0) for ep in self.episodes) / n
        return mean, np.maximum(np.sqrt(var), 1e-6)


def _check_same_spec(spec: DatasetSpec | None, header: dict, shard: Path) -> DatasetSpec:
    new = DatasetSpec(header["env_id"], header["observation_space"], header["action_space"])
    if spec is None:
        return new
    if new.env_id != spec.env_id:
        raise DataError(
            shard,
            len(MAGIC),
            f"env_id {new.env_id!r} differs from {spec.env_id!r} in earlier shards",
        )
    for name in ("observation_space", "action_space"):
        field = spaces_differ(getattr(spec, name), getattr(new, name))
        if field is not None:
            raise DataError(shard, len(MAGIC), f"{name}.{field} differs from earlier shards")
    return spec


def _shards_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(f"*{SHARD_SUFFIX}") if p.is_file())


class _Stitcher:
    """Joins steps records into episodes keyed by (agent, episode), in order of appearance."""

    def __init__(self):
        self._parts: dict[tuple[str, int], list[dict]] = {}
        self._closed: set[tuple[str, int]] = set()

    def add(self, record: dict, shard: Path, offset: int) -> None:
        key = (record["agent"], record["episode"])
        starts = bool(record["is_first"][0])
        if key in self._closed:
            raise DataError(
                shard, offset, f"steps for agent {key[0]!r} episode {key[1]} after its is_last"
            )
        if starts and key in self._parts:
            raise DataError(shard, offset, f"agent {key[0]!r} episode {key[1]} starts twice")
        self._parts.setdefault(key, []).append(record)
        if record["is_last"][-1]:
            self._closed.add(key)

    def episodes(self) -> list[dict]:
        out = []
        for (agent, episode), parts in self._parts.items():
            ep = {name: np.concatenate([p[name] for p in parts]) for name in STEP_FIELDS}
            ep["agent"] = agent
            ep["episode"] = episode
            out.append(ep)
        return out
