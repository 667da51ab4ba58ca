"""The fidelity bench, small: every env record carries the per-horizon errors, the targets'
verdicts and state bytes per backbone; bad envs are refused before anything is collected."""

import json
from pathlib import Path

import numpy as np
import pytest

from worldssm.bench import fidelity
from worldssm.errors import MissingDependencyError, WorldssmError


def test_smoke_run_writes_json_png_and_verdicts(tmp_path):
    result = fidelity.run(["Pendulum-v1"], backbones=("mamba2", "gru"), out_dir=tmp_path, work=tmp_path / "w",
                          preset="DEBUG", scale=0.01, train_steps=500)
    saved = json.loads((tmp_path / result["path"].rsplit("/", 1)[1]).read_text())
    assert list(tmp_path.glob("fidelity-cpu-*.png")), "the PNG grid is written beside the JSON"
    rec = saved["envs"]["Pendulum-v1"]
    assert set(rec["backbones"]) == {"mamba2", "gru"}
    assert rec["train_steps"] == 5, "train_steps replaces the entry's budget (6,000 x 0.01 would be 60)"
    for b in ("mamba2", "gru"):
        r = rec["backbones"][b]
        assert len(r["eval"]["obs_nmse"]["model"]) == 7 and r["train_seconds"] > 0
        assert (r["loss_rec"], r["loss_con"]) == (1.0, 1.0), "the DEBUG preset's loss weights, as the run trained"
        assert set(r["targets"]) >= {"h1_over_repeat_last", "h1_target_0.2x", "below_both_naive_up_to_32"}
        assert set(r["state_bytes_per_agent"]) == {"64", "1024", "16384"}
        assert len(set(r["state_bytes_per_agent"].values())) == 1, "a recurrent state does not grow with context"
    assert saved["git_sha"] is None or len(saved["git_sha"]) == 40
    # a change of the evaluation re-evaluates the same runs: same training, a new file naming the old
    import time

    time.sleep(1.1)  # result files are named by the second
    again = fidelity.reevaluate(result["path"], tmp_path / "w", tmp_path)
    assert again["reevaluated_from"] == Path(result["path"]).name and again["path"] != result["path"]
    old, new = rec["backbones"]["gru"], again["envs"]["Pendulum-v1"]["backbones"]["gru"]
    assert new["train_seconds"] == old["train_seconds"]
    assert new["eval"]["obs_nmse"]["model"] == pytest.approx(old["eval"]["obs_nmse"]["model"])


def test_resume_trains_the_same_run_on_with_the_same_data(tmp_path):
    """A budget longer than one sitting: the second call keeps the data and the run and trains it
    from 5 to 9 updates (the run's checkpoint says 9); both sittings are recorded and summed.
    Resuming nothing, or to no more updates, is refused before any training."""
    from worldssm.train.trainer import RunDirectory

    kw = dict(out_dir=tmp_path, work=tmp_path / "w", preset="DEBUG", scale=0.01)
    with pytest.raises(WorldssmError, match="nothing to resume"):
        fidelity.run(["Pendulum-v1"], train_steps=900, resume=True, **kw)
    first = fidelity.run(["Pendulum-v1"], train_steps=500, **kw)["envs"]["Pendulum-v1"]
    data = sorted(p.name for p in (tmp_path / "w" / "Pendulum-v1" / "data").iterdir())
    second = fidelity.run(["Pendulum-v1"], train_steps=900, resume=True, **kw)["envs"]["Pendulum-v1"]
    assert second["collect"] == first["collect"], "the data of the first call, not a new collection"
    assert sorted(p.name for p in (tmp_path / "w" / "Pendulum-v1" / "data").iterdir()) == data
    b = second["backbones"]["mamba2"]
    assert [x["upto"] for x in b["train_sittings"]] == [5, 9]
    assert b["train_seconds"] == pytest.approx(sum(x["seconds"] for x in b["train_sittings"]))
    assert b["eval"]["checkpoint_step"] == 9
    assert json.loads(RunDirectory(tmp_path / "w" / "Pendulum-v1" / "run-mamba2").config.read_text())["train_config"]["steps"] == 9
    with pytest.raises(WorldssmError, match="already has 9 updates"):
        fidelity.run(["Pendulum-v1"], train_steps=900, resume=True, **kw)
    with pytest.raises(WorldssmError, match="made with --seed 0, not 1"):
        fidelity.run(["Pendulum-v1"], train_steps=1500, resume=True, seed=1, **kw)
    with pytest.raises(WorldssmError, match="CartPole-v1: nothing to resume"):  # before Pendulum trains on
        fidelity.run(["Pendulum-v1", "CartPole-v1"], train_steps=1500, resume=True, **kw)
    assert b["train_sittings"] == json.loads((tmp_path / "w" / "Pendulum-v1" / "train-mamba2.json").read_text())


def test_a_sitting_stopped_by_sigterm_is_kept_and_resumed(tmp_path, monkeypatch):
    """A job's time limit (SIGTERM) in the middle of training: the trainer saves the step it
    reached, the sitting is recorded as interrupted, and --resume trains on from that step."""
    import os
    import signal

    from worldssm.train.trainer import Trainer

    kw = dict(out_dir=tmp_path, work=tmp_path / "w", preset="DEBUG", scale=0.01)
    update = Trainer.update

    def update_then_stop(self):
        out = update(self)
        if self.updates == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(Trainer, "update", update_then_stop)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        fidelity.run(["Pendulum-v1"], train_steps=800, **kw)
    monkeypatch.setattr(Trainer, "update", update)
    kept = json.loads((tmp_path / "w" / "Pendulum-v1" / "train-mamba2.json").read_text())
    assert [(x["upto"], x.get("interrupted")) for x in kept] == [(3, True)]
    assert signal.getsignal(signal.SIGTERM) == before, "the handler is put back"
    b = fidelity.run(["Pendulum-v1"], train_steps=800, resume=True, **kw)["envs"]["Pendulum-v1"]["backbones"]["mamba2"]
    assert [x["upto"] for x in b["train_sittings"]] == [3, 8]
    assert b["eval"]["checkpoint_step"] == 8


def test_transformer_state_grows_with_context():
    sizes = fidelity.state_bytes("DEBUG", "transformer", {"type": "box", "shape": [3], "dtype": "float32",
                                 "low": np.full(3, -1, np.float32), "high": np.full(3, 1, np.float32)},
                                 {"type": "discrete", "n": 2})
    assert sizes["64"] < sizes["1024"] < sizes["16384"]


def test_bad_envs_are_refused_before_collection(monkeypatch, tmp_path):
    monkeypatch.setitem(fidelity.SUITE, "needs-extra", fidelity.EnvEntry("worldssm/Pong64-v0", 1, 1, 1,
                                                                          extra="worldssm[envs]"))
    try:
        import ale_py  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match=r"worldssm\[envs\]"):
            fidelity.run(["needs-extra"], work=tmp_path / "w", out_dir=tmp_path)
        assert not (tmp_path / "w").exists()
    with pytest.raises(WorldssmError, match="--train-steps must be"):
        fidelity.run(["Pendulum-v1"], work=tmp_path / "w", out_dir=tmp_path, train_steps=1)
    assert not (tmp_path / "w").exists()
    monkeypatch.setitem(fidelity.SUITE, "multi", fidelity.EnvEntry("pettingzoo/classic/rps_v2", 2, 1, 1))
    pytest.importorskip("pettingzoo")
    with pytest.raises(WorldssmError, match="cannot take its observation space"):
        fidelity.run(["multi"], work=tmp_path / "w", out_dir=tmp_path)
