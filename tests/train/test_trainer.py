"""Training: determinism, exact resume, Ctrl-C, divergence, and checkpoints that disagree with data."""

import json

import pytest
import torch
from safetensors.torch import load_file

from worldssm.errors import CheckpointError
from worldssm.model import load_model
from worldssm.train import TrainConfig, Trainer, TrainingDiverged
from worldssm.checkpoint import resolve_checkpoint

CFG = TrainConfig(preset="DEBUG", steps=12, batch_size=4, seq_len=16, log_every=4, checkpoint_every=5, warmup=3)


def weights(run):
    return load_file(str(resolve_checkpoint(run) / "model.safetensors"))


def interrupt_at(trainer, n: int):
    """Make `trainer` raise KeyboardInterrupt (as Ctrl-C would) before its update number n."""
    real = trainer.update

    def update():
        if trainer.updates == n:
            raise KeyboardInterrupt
        return real()

    trainer.update = update


def test_resume_equals_uninterrupted_run(pendulum_data, tmp_path):
    """A run interrupted at update 7 (Ctrl-C saves) and resumed ends with the same weights as one
    that ran through: the learning-rate schedule, the sampler and the RNG continue exactly."""
    Trainer(pendulum_data, tmp_path / "a", CFG).run(progress=False)
    interrupted = Trainer(pendulum_data, tmp_path / "b", CFG)
    interrupt_at(interrupted, 7)
    with pytest.raises(KeyboardInterrupt):
        interrupted.run(progress=False)
    resumed = Trainer(pendulum_data, tmp_path / "b", CFG, resume=True)
    assert resumed.updates == 7
    resumed.run(progress=False)
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [4, 8, 12]  # the same lines as the run that went through


def test_different_seed_differs(pendulum_data, tmp_path):
    Trainer(pendulum_data, tmp_path / "a", CFG).run(progress=False)
    Trainer(pendulum_data, tmp_path / "b", TrainConfig(**{**CFG.to_dict(), "seed": 1})).run(progress=False)
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


def test_ctrl_c_saves_a_checkpoint(pendulum_data, tmp_path):
    trainer = Trainer(pendulum_data, tmp_path / "r", CFG)
    interrupt_at(trainer, 3)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(progress=False)
    assert resolve_checkpoint(tmp_path / "r").name == "step-00000003"
    assert Trainer(pendulum_data, tmp_path / "r", CFG, resume=True).updates == 3


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(pendulum_data, tmp_path, monkeypatch):
    trainer = Trainer(pendulum_data, tmp_path / "r", CFG)
    forward = trainer.model.forward

    def poisoned(batch, *a, **k):
        loss, metrics, state, out = forward(batch, *a, **k)
        if trainer.updates >= 6:
            loss = loss * float("nan")
        return loss, metrics, state, out

    monkeypatch.setattr(trainer.model, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match="step 7.*loss is nan.*step-00000005"):
        trainer.run(progress=False)
    assert resolve_checkpoint(tmp_path / "r").name == "step-00000005"
    model, sidecar = load_model(tmp_path / "r")
    assert sidecar["step"] == 5
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_checkpoint_spaces_must_match_data(pendulum_data, tmp_path):
    from worldssm.data import collect

    Trainer(pendulum_data, tmp_path / "r", TrainConfig(**{**CFG.to_dict(), "steps": 2})).run(progress=False)
    other = tmp_path / "cartpole"
    collect("CartPole-v1", 1, 40, other, seed=0)
    with pytest.raises(CheckpointError, match=r"observation_space\.shape differs"):
        Trainer(other, tmp_path / "r", CFG, resume=True)


def test_missing_or_damaged_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        load_model(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("step-00000009\n")
    with pytest.raises(CheckpointError, match="step-00000009, which is missing"):
        load_model(tmp_path)
