"""The experiment scripts under scripts/ (they back numbers in the README and the notes)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_config_experiment_takes_model_fields_only():
    import argparse

    parse_set = _load("config_experiment").parse_set
    assert parse_set("loss_rec=10") == ("loss_rec", 10.0)
    with pytest.raises(argparse.ArgumentTypeError, match="FIELD one of"):
        parse_set("learning_rate=1e-3")  # a training field, not the model's
    with pytest.raises(argparse.ArgumentTypeError, match="FIELD one of"):
        parse_set("backbone=3")  # a nested config, not a number
    with pytest.raises(argparse.ArgumentTypeError, match="not a number"):
        parse_set("mean_rows=half")


def test_direct_predictor_scores_the_held_out_steps(tmp_path, monkeypatch):
    from worldssm.data import RolloutDataset, collect
    from worldssm.train import TrainConfig

    collect("CartPole-v1", 4, 400, tmp_path / "data", seed=0)
    out = tmp_path / "direct.json"
    monkeypatch.setattr(sys, "argv", ["direct_predictor", "--data", str(tmp_path / "data"), "--steps", "30",
                                      "--history", "3", "--out", str(out)])
    _load("direct_predictor").main()
    res = json.loads(out.read_text())
    # repeat-last, computed here on its own: held-out episodes, steps after 16 observed ones
    cfg = TrainConfig()
    _, held = RolloutDataset.load(tmp_path / "data").split(cfg.val_fraction, cfg.seed)
    obs = np.concatenate([e["obs"] for e in held.episodes]).astype(np.float64)
    var = np.maximum(obs.var(0), 1e-2 * obs.var(0).mean())
    errs = [((e["obs"][t + 1] - e["obs"][t]) ** 2 / var) for e in held.episodes for t in range(15, len(e["obs"]) - 1)]
    assert res["scored_rows"] == len(errs) > 0
    assert res["h1"]["repeat_last"] == pytest.approx(float(np.mean(errs)), rel=1e-9)
    assert len(res["per_dim"]["direct"]) == 4 and res["h1"]["direct"] > 0
    assert res["h1_over_repeat_last"] == pytest.approx(res["h1"]["direct"] / res["h1"]["repeat_last"])
