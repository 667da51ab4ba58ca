import numpy as np
import pytest

from worldssm import codec
from worldssm.data import RolloutDataset, SequenceSampler
from worldssm.data.dataset import DatasetSpec

from ._helpers import box_space, steps

LENGTHS = [3, 5, 2, 4, 6]


def _dataset():
    """Episodes whose obs[:, 0] is the step index within the episode and obs[:, 1] the episode."""
    episodes = []
    for i, n in enumerate(LENGTHS):
        # Episode 3 is partial: it does not start with is_first in the data.
        ep = steps("a", i, n, first=(i != 3), last=(i != 4))
        ep["obs"][:, 1] = i
        episodes.append(
            {k: ep[k] for k in ("obs", "action", "reward", "is_first", "is_last", "is_terminal")}
        )
    spec = DatasetSpec("Test-v0", box_space([3]), box_space([1]))
    return RolloutDataset(spec, episodes)


def test_stream_is_first_sits_exactly_at_episode_starts():
    sampler = SequenceSampler(_dataset(), batch_size=2, seq_len=4, seed=0)
    starts = np.cumsum([0] + LENGTHS[:-1])
    assert np.flatnonzero(sampler.stream["is_first"]).tolist() == starts.tolist()
    assert len(sampler.stream["reward"]) == sum(LENGTHS)


def test_windows_are_contiguous_and_flags_follow_episode_starts():
    sampler = SequenceSampler(_dataset(), batch_size=64, seq_len=6, seed=1)
    batch = sampler.sample()
    assert batch["obs"].shape == (64, 6, 3) and batch["action"].shape == (64, 6, 1)
    assert batch["reward"].shape == (64, 6) and batch["is_first"].dtype == bool
    step_in_ep, ep = batch["obs"][..., 0], batch["obs"][..., 1]
    np.testing.assert_array_equal(batch["is_first"], step_in_ep == 0)
    # Inside an episode the step index increases by 1; a new episode starts exactly at is_first.
    same_ep = ep[:, 1:] == ep[:, :-1]
    np.testing.assert_array_equal(same_ep, ~batch["is_first"][:, 1:])
    np.testing.assert_array_equal(step_in_ep[:, 1:][same_ep], step_in_ep[:, :-1][same_ep] + 1)
    assert (~same_ep).any(), "some windows should cross an episode boundary"


def _draw(sampler, n):
    return [sampler.sample() for _ in range(n)]


def _same(a, b):
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_reproducible_from_seed_and_from_state_dict():
    ds = _dataset()
    assert _same(
        _draw(SequenceSampler(ds, 4, 3, seed=7), 3), _draw(SequenceSampler(ds, 4, 3, seed=7), 3)
    )
    assert not _same(
        _draw(SequenceSampler(ds, 4, 3, seed=7), 3), _draw(SequenceSampler(ds, 4, 3, seed=8), 3)
    )
    sampler = SequenceSampler(ds, 4, 3, seed=7)
    _draw(sampler, 5)
    state = codec.unpackb(codec.packb(sampler.state_dict()))
    expected = _draw(sampler, 4)
    resumed = SequenceSampler(ds, 4, 3, seed=0)
    resumed.load_state_dict(state)
    assert resumed.num_samples == 5 and resumed.seed == 7
    assert _same(_draw(resumed, 4), expected)


def test_state_from_other_config_is_rejected():
    ds = _dataset()
    state = SequenceSampler(ds, 4, 3, seed=0).state_dict()
    with pytest.raises(ValueError, match="seq_len=3"):
        SequenceSampler(ds, 4, 5, seed=0).load_state_dict(state)


def test_too_little_data_is_a_clear_error():
    with pytest.raises(ValueError, match="has 20 steps in total, fewer than seq_len=21"):
        SequenceSampler(_dataset(), batch_size=1, seq_len=21, seed=0)
    assert SequenceSampler(_dataset(), 1, 20, seed=0).sample()["obs"].shape == (1, 20, 3)
