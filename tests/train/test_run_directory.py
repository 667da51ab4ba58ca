"""A run directory is never lost or shared: non-empty runs are refused without --resume or
--overwrite, one trainer at a time holds the lock, links are refused, a killed run's leftovers
are cleaned, torn metrics are tolerated, other data is refused on resume, a full disk says so."""

import errno
import json
import os
import shutil

import pytest

from worldssm.checkpoint import resolve_checkpoint
from worldssm.errors import CheckpointError, WorldssmError
from worldssm.locks import DirectoryBusy, DirLock
from worldssm.model import load_model
from worldssm.train import TrainConfig, Trainer
from worldssm.train.evaluate import EvalConfig, evaluate

CFG = TrainConfig(preset="DEBUG", steps=4, batch_size=2, seq_len=16, log_every=2, checkpoint_every=2, warmup=1)


def with_steps(steps, **kw):
    return TrainConfig(**{**CFG.to_dict(), "steps": steps, **kw})


def metric_steps(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def snapshot(run):
    """Every file under `run` (but the lock) with its bytes."""
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != ".worldssm.lock"}


@pytest.fixture
def run(pendulum_data, tmp_path):
    Trainer(pendulum_data, tmp_path / "run", CFG).run(progress=False)
    return tmp_path / "run"


# ----- class 1: a non-empty run directory --------------------------------------------------------
def test_training_again_without_resume_or_overwrite_is_refused(pendulum_data, run):
    before = snapshot(run)
    with pytest.raises(WorldssmError, match=rf"^run directory {run} is not empty \(it holds checkpoints, config\.json, "
                                            r"metrics\.jsonl\): pass --resume .* or --overwrite .*$"):
        Trainer(pendulum_data, run, with_steps(3))
    assert snapshot(run) == before
    assert load_model(run)[1]["step"] == 4


def test_overwrite_clears_the_old_run_and_trains_anew(pendulum_data, run):
    (run / "notes.txt").write_text("mine")
    Trainer(pendulum_data, run, with_steps(3), overwrite=True).run(progress=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-00000002", "step-00000003"]
    assert metric_steps(run) == [2, 3]
    assert json.loads((run / "config.json").read_text())["train_config"]["steps"] == 3
    assert (run / "notes.txt").read_text() == "mine"


def test_a_rejected_overwrite_leaves_the_old_run(pendulum_data, run):
    before = snapshot(run)
    with pytest.raises(WorldssmError, match="seq_len=100000"):
        Trainer(pendulum_data, run, with_steps(3, seq_len=100_000), overwrite=True)
    assert snapshot(run) == before


def test_a_rejected_new_run_leaves_no_directory(pendulum_data, tmp_path):
    with pytest.raises(WorldssmError, match="seq_len=100000"):
        Trainer(pendulum_data, tmp_path / "a" / "b", with_steps(3, seq_len=100_000))
    assert not (tmp_path / "a").exists()


def test_resume_and_overwrite_exclude_each_other(pendulum_data, run):
    with pytest.raises(WorldssmError, match="--resume and --overwrite exclude each other"):
        Trainer(pendulum_data, run, CFG, resume=True, overwrite=True)


# ----- class 2: one process per run directory ----------------------------------------------------
def test_a_second_trainer_is_refused_naming_the_holder(pendulum_data, run):
    first = Trainer(pendulum_data, run, with_steps(6), resume=True)
    with pytest.raises(DirectoryBusy, match=rf"{run} is in use: training by pid {os.getpid()}"):
        Trainer(pendulum_data, run, with_steps(8), resume=True)
    with pytest.raises(DirectoryBusy):
        Trainer(pendulum_data, run, with_steps(8), overwrite=True)
    first.run(progress=False)  # releases the lock when it returns
    assert Trainer(pendulum_data, run, with_steps(8), resume=True).updates == 6


def test_a_new_run_holds_the_lock_from_construction(pendulum_data, tmp_path):
    trainer = Trainer(pendulum_data, tmp_path / "r", CFG)
    with pytest.raises(DirectoryBusy, match="training by pid"):
        DirLock(tmp_path / "r", "probe")
    trainer.close()
    DirLock(tmp_path / "r", "probe").release()


def test_eval_reads_a_run_that_is_training(pendulum_data, run, tmp_path, monkeypatch):
    monkeypatch.setattr("worldssm.train.evaluate.plot", lambda *a: None)
    with DirLock(run, "training"):
        result = evaluate(run, pendulum_data, tmp_path / "ev", EvalConfig(context=8, max_windows=4))
    assert result["checkpoint_step"] == 4


# ----- class 3: links inside a run directory ----------------------------------------------------
@pytest.mark.parametrize("name", ["metrics.jsonl", "config.json", "checkpoints", "checkpoints/latest"])
def test_a_planted_link_is_refused_and_nothing_is_written_through_it(pendulum_data, run, tmp_path, name):
    target = tmp_path / "victim"
    path = run / name
    if path.is_dir():
        shutil.move(str(path), target)
    else:
        target.write_bytes(path.read_bytes())
        path.unlink()
    path.symlink_to(target)
    before = snapshot(tmp_path / "victim") if target.is_dir() else target.read_bytes()
    with pytest.raises(CheckpointError, match=rf"{name} is a symbolic link; .* remove it"):
        Trainer(pendulum_data, run, with_steps(6), resume=True).run(progress=False)
    assert (snapshot(target) if target.is_dir() else target.read_bytes()) == before


def test_a_link_planted_in_a_new_run_is_refused(pendulum_data, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.jsonl").symlink_to(tmp_path / "victim")
    with pytest.raises(CheckpointError, match="metrics.jsonl is a symbolic link"):
        Trainer(pendulum_data, tmp_path / "r", CFG, overwrite=True)
    assert not (tmp_path / "victim").exists()


# ----- class 4: leftovers of a killed run --------------------------------------------------------
def test_leftovers_of_a_killed_run_are_removed_at_the_next_start(pendulum_data, run):
    ckpts = run / "checkpoints"
    (ckpts / ".step-00000006.k2j3").mkdir()
    (ckpts / ".step-00000006.k2j3" / "model.safetensors").write_bytes(b"partial")
    leftovers = [ckpts / ".latest.abc.tmp", run / ".metrics.jsonl.x1.tmp", run / ".config.json.y2.tmp"]
    for p in leftovers:
        p.write_text("partial")
    (run / ".notes").write_text("not ours")
    Trainer(pendulum_data, run, with_steps(6), resume=True).run(progress=False)
    assert not any(p.exists() for p in [ckpts / ".step-00000006.k2j3", *leftovers])
    assert (run / ".notes").read_text() == "not ours"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step-00000004", "step-00000006"]


# ----- class 5: metrics after kill -9 ------------------------------------------------------------
def test_a_torn_last_metrics_line_is_dropped_with_a_warning(pendulum_data, run):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"loss": 1.25, "st')
    with pytest.warns(UserWarning, match=r"metrics\.jsonl: line 3 is cut short"):
        Trainer(pendulum_data, run, with_steps(6), resume=True).run(progress=False)
    assert metric_steps(run) == [2, 4, 6]


def test_a_bad_line_in_the_middle_is_an_error_naming_file_and_line(pendulum_data, run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0], "{not json", lines[1]]) + "\n")
    with pytest.raises(CheckpointError, match=r"metrics\.jsonl: line 2 is not a JSON object with an integer step"):
        Trainer(pendulum_data, run, with_steps(6), resume=True).run(progress=False)


# ----- class 6: resuming on other data -----------------------------------------------------------
def test_resuming_on_more_data_is_refused_naming_both_sizes(pendulum_data, run, tmp_path):
    from worldssm.data import RolloutDataset, collect

    collect("Pendulum-v1", 3, 300, tmp_path / "more", seed=3)
    then, now = (RolloutDataset.load(p).num_steps for p in (pendulum_data, tmp_path / "more"))
    message = (rf"step-00000004 was trained on {then} steps \(\d+ episodes\) of data, and \S+more now holds {now} "
               r"steps .*resume with that data, or train a new run")
    with pytest.raises(CheckpointError, match=message):
        Trainer(tmp_path / "more", run, with_steps(6), resume=True)


# ----- a full disk -------------------------------------------------------------------------------
def enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(pendulum_data, run, monkeypatch):
    trainer = Trainer(pendulum_data, run, with_steps(6), resume=True)
    trainer.update()
    monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(WorldssmError, match=r"^cannot write checkpoint \S+step-00000005: No space left on device; "
                                            r"the previous checkpoint and \S+latest are kept"):
        trainer.save()
    monkeypatch.undo()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-00000002", "step-00000004"]
    assert resolve_checkpoint(run).name == "step-00000004"
    monkeypatch.setattr("worldssm.checkpoint.atomic_write_text", enospc)
    with pytest.raises(WorldssmError, match=r"^cannot write checkpoint .*are kept"):
        trainer.save()
    monkeypatch.undo()
    assert (run / "checkpoints" / "latest").read_text() == "step-00000004\n"
    trainer.close()
    assert load_model(run)[1]["step"] == 4


def test_a_full_disk_while_logging_is_one_line(pendulum_data, run, monkeypatch):
    monkeypatch.setattr("worldssm.train.trainer.atomic_write_text", enospc)
    with pytest.raises(WorldssmError, match=r"^cannot write \S+config\.json: No space left on device; free space"):
        Trainer(pendulum_data, run, with_steps(6), resume=True).run(progress=False)
