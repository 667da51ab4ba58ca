"""Drawing fixed-length training sequences, with their reset flags, from a rollout dataset."""

from __future__ import annotations

import numpy as np

from worldssm.data.dataset import RolloutDataset
from worldssm.data.format import STEP_FIELDS

_MASK64 = 2**64 - 1


class SequenceSampler:
    """Uniform windows of `seq_len` steps from the dataset's episodes packed back to back.

    The episodes are concatenated, in dataset order, into one stream of S steps; a window may
    cross episode boundaries, so the model must reset its state wherever is_first is set. In the
    stream is_first is set at the first step of every episode, including partial episodes that
    did not start with is_first in the files (their state must not leak from the previous one).
    The stream is a copy of the dataset's arrays (memory: one extra copy of the data).

    Args:
        dataset: the episodes to draw from.
        batch_size: B, windows per `sample()`.
        seq_len: T, steps per window.
        seed: seeds the numpy Generator (PCG64) that picks window starts.

    Raises:
        ValueError: non-positive sizes, or a dataset with fewer than seq_len steps in total.
    """

    def __init__(self, dataset: RolloutDataset, batch_size: int, seq_len: int, seed: int):
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
        total = dataset.num_steps
        if total < seq_len:
            raise ValueError(
                f"the dataset has {total} steps in total, fewer than seq_len={seq_len}; "
                "collect more data or use a shorter seq_len"
            )
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.num_samples = 0
        self.stream = _pack(dataset)
        self.stream_len = total
        self._rng = np.random.Generator(np.random.PCG64(seed))

    def sample(self) -> dict[str, np.ndarray]:
        """Draw B windows.

        Returns:
            Dict with obs [B, T, *obs_shape], action [B, T, *act_shape], reward float32 [B, T],
            is_first / is_last / is_terminal bool [B, T].
        """
        starts = self._rng.integers(0, self.stream_len - self.seq_len + 1, size=self.batch_size)
        idx = starts[:, None] + np.arange(self.seq_len)  # [B, T]
        self.num_samples += 1
        return {name: self.stream[name][idx] for name in STEP_FIELDS}

    def state_dict(self) -> dict:
        """Everything needed to resume the exact sequence of windows (plain ints only).

        The 128-bit PCG64 words are split into [high, low] 64-bit ints so that the dict fits
        msgpack and JSON.
        """
        state = self._rng.bit_generator.state
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "stream_len": self.stream_len,
            "num_samples": self.num_samples,
            "rng": {
                "state": _split128(state["state"]["state"]),
                "inc": _split128(state["state"]["inc"]),
                "has_uint32": int(state["has_uint32"]),
                "uinteger": int(state["uinteger"]),
            },
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`.

        Raises:
            ValueError: the state was saved for a different batch size, seq_len or dataset size.
        """
        for key in ("batch_size", "seq_len", "stream_len"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]}, this sampler has {getattr(self, key)}"
                )
        rng = state["rng"]
        self._rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": _join128(rng["state"]), "inc": _join128(rng["inc"])},
            "has_uint32": rng["has_uint32"],
            "uinteger": rng["uinteger"],
        }
        self.seed = state["seed"]
        self.num_samples = state["num_samples"]


def _pack(dataset: RolloutDataset) -> dict[str, np.ndarray]:
    stream = {name: np.concatenate([ep[name] for ep in dataset.episodes]) for name in STEP_FIELDS}
    starts = np.cumsum([0] + [len(ep["reward"]) for ep in dataset.episodes[:-1]])
    stream["is_first"][starts] = True
    return stream


def _split128(value: int) -> list[int]:
    return [(value >> 64) & _MASK64, value & _MASK64]


def _join128(words: list[int]) -> int:
    return (int(words[0]) << 64) | int(words[1])
