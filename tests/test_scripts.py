"""The experiment scripts under scripts/ (they back numbers in the README and the notes)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

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


def test_lunarlander_floor_replays_the_flight_over_other_terrains():
    pytest.importorskip("Box2D", reason="LunarLander needs the envs extra (box2d)")
    mod = _load("lunarlander_floor")
    env = mod.TerrainLander(continuous=True)
    acts = np.random.default_rng(0).uniform(-1, 1, (1000, 2)).astype(np.float32)
    own, _ = mod.rollout(env, 1003, acts)
    flat = np.full(mod.CHUNKS + 1, 0.5)
    env.terrain = flat
    env.reset(seed=1003)
    ground = [f.shape.vertices[0][1] for f in env.moon.fixtures[1:]]
    # the heights taken (LunarLander smooths each point with its neighbours: 0.33 * 3 of them)
    assert ground[0] == pytest.approx(0.99 * 0.5) and ground[4] == pytest.approx(0.99 * env.helipad_y)
    low, _ = mod.rollout(env, 1003, acts[:len(own) - 1], flat)
    # the same seed's engine noise: identical until the lander touches one of the two grounds
    touch = [np.flatnonzero(o[:, 6:8].any(1)) for o in (own, low)]
    first = min([t[0] for t in touch if t.size] + [len(own), len(low)])
    assert first > 20 and np.array_equal(own[:first], low[:first])
    res = mod.measure(2, 8)
    assert 0 < res["floor"] < res["repeat_last"] and res["ends"] == 2
    f1, _ = mod.best_f1(np.array([1.0, 0.0, 0.5, 0.5]))
    assert f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 0))  # predicting all three nonzero: tp 2, fp 1


def test_swarm_floor_branches_from_the_whole_state():
    mod = _load("swarm_floor")
    ep = mod.episode(0, branches=6, every=40, max_steps=60)  # asserts that a copy replays its own tick
    assert len(ep["spread"]) == len(ep["last"]) > 10
    spread = np.array(ep["spread"])
    assert (spread >= 0).all() and spread.sum() > 0  # others' noise and respawns move the next observation
    assert np.array(ep["last"]).sum() > spread.sum()


def test_continue_probe_counts_every_end_and_scores_the_model_head(tmp_path):
    from worldssm.data import RolloutDataset, collect
    from worldssm.train import TrainConfig, Trainer

    collect("CartPole-v1", 4, 300, tmp_path / "data", seed=0)
    cfg = TrainConfig(preset="DEBUG", steps=2, batch_size=2, seq_len=16, log_every=1, checkpoint_every=2)
    Trainer(tmp_path / "data", tmp_path / "run", cfg).run(progress=False)
    import worldssm as ws

    mod = _load("continue_probe")
    model = ws.load(tmp_path / "run").eval()
    train, held = RolloutDataset.load(tmp_path / "data").split(TrainConfig().val_fraction, TrainConfig().seed)
    res = mod.probe(model, train.episodes, held.episodes, pos_weight=5.0, updates=5)
    ends = sum(int(e["is_terminal"][1:].sum()) for e in held.episodes if len(e["reward"]) > 1)
    assert res["held_ends"] == ends > 0 and res["train_ends"] > 0
    steps = sum(len(e["reward"]) - 1 for e in held.episodes if len(e["reward"]) > 1)
    for scored in (res["model_head_held"], res["probe_held"]):  # every held-out step and end, scored
        assert scored["steps"] == steps and scored["terminal_steps"] == ends
    assert res["probe_train"]["terminal_steps"] == res["train_ends"]
    # the head on [h_t, z_{t+1}]: z from the posterior of the real o_{t+1} and from the prior at t
    h, y, post, prior = mod.states(model, held.episodes, latents=True)
    assert len(h) == len(y) == len(post) == len(prior) == steps
    v, k = model.cfg.latent_vars, model.cfg.latent_classes
    assert post.shape[1] == prior.shape[1] == v * k
    torch.testing.assert_close(prior.view(-1, v, k).sum(-1), torch.ones(steps, v))  # probabilities
    ep = next(e for e in held.episodes if len(e["reward"]) > 1)
    with torch.no_grad():
        want = model.latent(model.posterior(torch.as_tensor(ep["obs"][1:2])))[0]
    torch.testing.assert_close(mod.states(model, [ep], latents=True)[2][0], want)  # z_{t+1} is o_{t+1}'s
    res = mod.probe_next_latent(model, train.episodes, held.episodes, pos_weight=5.0, updates=5)
    assert res["held_ends"] == ends
    for scored in (res["probe_held_posterior_z"], res["probe_held_prior_z"]):
        assert scored["steps"] == steps and scored["terminal_steps"] == ends


def test_dream_step_ab_arms_undo_one_change_each_and_new_restores_them():
    from tests.engine.engine_helpers import debug_model, obs_actions
    from worldssm.engine.engine import Engine
    from worldssm.model import fused
    from worldssm.model.mamba2 import Mamba2Backbone

    mod = _load("dream_step_ab")
    shipped = (Mamba2Backbone.state_spec, fused.decode_mlp, Engine.imagine, Engine.observe)
    try:
        def conv_dtype():
            return Engine(debug_model(), 4, precision="bfloat16").slab.tensors["0.conv"].dtype

        def light_z():
            eng = Engine(debug_model(), 4, impl="torch")
            s = eng.join(2)
            obs, act = obs_actions(2, 2, seed=1)
            eng.observe(s, obs[0], act[0], np.ones(2, bool), latents=False)
            return eng.imagine(s, act[1], latents=False).z

        assert conv_dtype() == torch.bfloat16 and light_z() is None
        mod.arm("conv32")
        assert conv_dtype() == torch.float32 and light_z() is None and fused.decode_mlp is shipped[1]
        mod.arm("decmod")
        assert conv_dtype() == torch.bfloat16 and fused.decode_mlp is not shipped[1]
        model = debug_model()
        z = torch.rand(3, model.cfg.latent_vars * model.cfg.latent_classes)
        h = torch.randn(3, model.cfg.backbone.d_model)
        from worldssm.model.nets import run_mlp

        torch.testing.assert_close(fused.decode_mlp(model, z, h), run_mlp(model.decoder, torch.cat([z, h], -1)))
        mod.arm("latents")
        assert light_z() is not None and fused.decode_mlp is shipped[1]
        mod.arm("old")
        assert conv_dtype() == torch.float32 and light_z() is not None and fused.decode_mlp is not shipped[1]
        mod.arm("new")
        assert (Mamba2Backbone.state_spec, fused.decode_mlp, Engine.imagine, Engine.observe) == shipped
        with pytest.raises(ValueError, match="arm must be one of"):
            mod.arm("fast")
    finally:
        Mamba2Backbone.state_spec, fused.decode_mlp, Engine.imagine, Engine.observe = shipped
