"""Rollout data: the shard format, loading and splitting, sequence sampling, and collection."""

from worldssm.data.collect import EpisodeRecorder, collect
from worldssm.data.dataset import DatasetSpec, RolloutDataset
from worldssm.data.format import (
    FORMAT_VERSION,
    MAGIC,
    STEP_FIELDS,
    ShardWriter,
    iter_shard,
    make_header,
    read_shard,
)
from worldssm.data.sampler import SequenceSampler

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "STEP_FIELDS",
    "DatasetSpec",
    "EpisodeRecorder",
    "RolloutDataset",
    "SequenceSampler",
    "ShardWriter",
    "collect",
    "iter_shard",
    "make_header",
    "read_shard",
]
