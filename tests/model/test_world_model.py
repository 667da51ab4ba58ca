"""One module, two modes: T steps equal one forward over T, through the whole world model."""

import dataclasses

import pytest
import torch

from worldssm.model import WorldModel, preset
from worldssm.model.config import BackboneConfig, WorldModelConfig, preset_for

from tests.model.wm_helpers import BOX_ACT, DISC_ACT, IMG_OBS, VEC_OBS, random_batch


def to_double(batch):
    return {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}


@pytest.mark.parametrize("kind", ["mamba2", "gru", "transformer"])
def test_steps_equal_sequence(kind):
    cfg = preset("DEBUG")
    cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, kind=kind))
    torch.manual_seed(0)
    model = WorldModel(cfg, VEC_OBS, DISC_ACT).double()
    batch = to_double(random_batch(VEC_OBS, DISC_ACT, 3, 21, seed=1, reset_p=0.15))
    with torch.no_grad():
        state_seq, pred_seq = model.observe_sequence(batch["obs"], batch["action"], batch["is_first"])
        state = model.initial_state(3)
        state = {k: v.double() if v.dtype == torch.float32 else v for k, v in state.items()}
        preds = []
        for t in range(21):
            state, p = model.observe(state, batch["obs"][:, t], batch["action"][:, t], batch["is_first"][:, t])
            preds.append(p)
    torch.testing.assert_close(torch.stack([p.h for p in preds], 1), pred_seq.h)
    torch.testing.assert_close(torch.stack([p.prior_logp for p in preds], 1), pred_seq.prior_logp)
    torch.testing.assert_close(torch.stack([p.reward for p in preds], 1), pred_seq.reward)
    for k in state:
        torch.testing.assert_close(state[k].to(state_seq[k].dtype), state_seq[k])


def test_imagine_after_context_equals_one_pass(debug_model):
    """Observing C steps then imagining equals a single pass fed the same latents."""
    model = debug_model
    batch = to_double(random_batch(VEC_OBS, BOX_ACT, 2, 12, seed=2, reset_p=0.0))
    c = 7
    with torch.no_grad():
        state, pred = model.observe_sequence(batch["obs"][:, :c], batch["action"][:, :c], batch["is_first"][:, :c])
        last = type(pred)(*(None if f is None else f[:, -1] for f in pred))
        z_post = model.latent(model.posterior(batch["obs"][:, :c]))
        zs, hs = [], []
        for t in range(c, 12):
            z = model.latent(last.prior_logp)
            zs.append(z)
            state, last = model.imagine(state, z, batch["action"][:, t])
            hs.append(last.h)
        z_all = torch.cat([z_post, torch.stack(zs, 1)], 1)
        h_all, _ = model.backbone(model._inputs(z_all, batch["action"]), None, resets=batch["is_first"].bool())
    torch.testing.assert_close(torch.stack(hs, 1), h_all[:, c:])


def test_state_size_does_not_depend_on_age(debug_model):
    model = debug_model
    sizes = []
    for t in (1, 5, 40):
        batch = to_double(random_batch(VEC_OBS, BOX_ACT, 2, t, seed=t))
        with torch.no_grad():
            state, _ = model.observe_sequence(batch["obs"], batch["action"], batch["is_first"])
        sizes.append(model.state_nbytes(state))
    assert sizes[0] == sizes[1] == sizes[2] > 0


def test_reset_row_matches_fresh_agent(debug_model):
    model = debug_model
    batch = to_double(random_batch(VEC_OBS, BOX_ACT, 2, 10, seed=3, reset_p=0.0))
    batch["is_first"][1, 6] = True
    with torch.no_grad():
        _, pred = model.observe_sequence(batch["obs"], batch["action"], batch["is_first"])
        fresh_first = batch["is_first"][1:, 6:].clone()
        fresh_first[:, 0] = True
        _, fresh = model.observe_sequence(batch["obs"][1:, 6:], batch["action"][1:, 6:], fresh_first)
    torch.testing.assert_close(pred.h[1, 6:], fresh.h[0])


@pytest.mark.parametrize("kind", ["mamba2", "transformer"])
@pytest.mark.parametrize("obs_space,act_space", [(VEC_OBS, BOX_ACT), (IMG_OBS, DISC_ACT)])
def test_loss_backward_trains(obs_space, act_space, kind):
    torch.manual_seed(0)
    model = WorldModel(preset_for("DEBUG", kind), obs_space, act_space)
    batch = random_batch(obs_space, act_space, 2, 9, seed=4)  # 9 steps: past the DEBUG transformer's window of 8
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, metrics, _, _ = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["rec"].item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0]
    for name, p in model.named_parameters():
        assert p.grad is not None, name


def test_config_validation_names_field():
    with pytest.raises(ValueError, match="n_heads"):
        BackboneConfig(n_heads=0)
    with pytest.raises(ValueError, match="unknown fields"):
        WorldModelConfig.from_dict({"nope": 1})
    cfg = preset("SMALL")
    assert WorldModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("chunk", [0, 8, 24, 48])
def test_chunk_size_must_be_a_power_of_two_at_least_16(chunk):
    """The Triton scan tiles the chunk: a config it could not run is refused up front."""
    with pytest.raises(ValueError, match="chunk_size"):
        BackboneConfig(chunk_size=chunk)
    assert BackboneConfig(chunk_size=16).chunk_size == 16


def test_image_model_round_trips_64x64_shapes():
    import numpy as np

    space = {"type": "box", "shape": [64, 64, 3], "dtype": "uint8", "low": np.zeros((64, 64, 3), np.uint8),
             "high": np.full((64, 64, 3), 255, np.uint8)}
    torch.manual_seed(0)
    model = WorldModel(preset("DEBUG"), space, DISC_ACT)
    batch = random_batch(space, DISC_ACT, 2, 3)
    loss, _, _, out = model(batch)
    assert torch.isfinite(loss)
    with torch.no_grad():
        state, pred = model.observe(model.initial_state(2), batch["obs"][:, 0], batch["action"][:, 0],
                                    torch.ones(2, dtype=torch.bool))
        img = model.decode(model.latent(pred.prior_logp), pred.h)
    assert img.shape == (2, 64, 64, 3) and 0 <= img.min() and img.max() <= 255


def test_box_dims_with_low_equal_high_give_finite_states():
    """Gymnasium allows low == high on a Box dim; scaling by high - low would divide by zero."""
    import numpy as np

    from worldssm.engine import Engine
    from worldssm.model import WorldModel, preset

    space = {"type": "box", "shape": [2], "dtype": "float32", "low": np.array([-1.0, 0.5], np.float32),
             "high": np.array([1.0, 0.5], np.float32)}
    obs = {"type": "box", "shape": [3], "dtype": "float32", "low": np.full(3, -1, np.float32),
           "high": np.full(3, 1, np.float32)}
    torch.manual_seed(0)
    model = WorldModel(preset("DEBUG"), obs, space).eval()
    outs = []
    for impl in ("torch", "numpy"):
        rng = np.random.default_rng(0)
        eng = Engine(model, 4, impl=impl)
        slots = eng.join(4)
        for t in range(3):
            a = np.stack([rng.uniform(-1, 1, 4), np.full(4, 0.5)], 1).astype(np.float32)
            out = eng.observe(slots, rng.standard_normal((4, 3)).astype(np.float32), a, np.full(4, t == 0))
        assert all(torch.isfinite(t).all() for t in eng.slab.tensors.values()), impl
        outs.append(out.reward)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)


def test_observation_statistics_standardise_encoder_input_and_decoder_output():
    """With statistics set, the encoder sees symlog((o - loc) / scale) and decode inverts it: an
    observation shifted by loc and stretched by scale gives the same latent, and decode of the
    same latent gives the shifted, stretched observation back."""
    import numpy as np

    from worldssm.model import WorldModel, preset

    obs = {"type": "box", "shape": [3], "dtype": "float32", "low": np.full(3, -9, np.float32),
           "high": np.full(3, 9, np.float32)}
    act = {"type": "discrete", "n": 2}
    torch.manual_seed(0)
    plain = WorldModel(preset("DEBUG"), obs, act).double()
    scaled = WorldModel(preset("DEBUG"), obs, act).double()
    scaled.load_state_dict(plain.state_dict())
    loc, scale = np.array([1.0, -2.0, 0.5]), np.array([0.1, 3.0, 1.0])
    scaled.set_obs_stats(loc, scale)
    o = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(scaled.posterior(o * torch.as_tensor(scale) + torch.as_tensor(loc)), plain.posterior(o))
    z = plain.latent(plain.posterior(o))
    h = torch.randn(5, 24, dtype=torch.float64)
    torch.testing.assert_close(scaled.decode(z, h), plain.decode(z, h) * torch.as_tensor(scale) + torch.as_tensor(loc))
    with pytest.raises(ValueError, match="3 values per dimension"):
        scaled.set_obs_stats(np.zeros(2), np.ones(2))
    scaled.set_obs_stats(np.zeros(3), np.zeros(3))
    assert float(scaled.obs_scale.min()) == pytest.approx(1e-3), "a constant dimension is floored"


def test_trainer_sets_the_statistics_of_its_training_data(pendulum_data, tmp_path):
    import numpy as np

    from worldssm.train import TrainConfig, Trainer

    trainer = Trainer(pendulum_data, tmp_path / "run", TrainConfig(preset="DEBUG", steps=1, batch_size=2, seq_len=16))
    mean, std = trainer.train_set.obs_stats()
    np.testing.assert_allclose(trainer.model.obs_loc.cpu().numpy(), mean, rtol=1e-6)
    np.testing.assert_allclose(trainer.model.obs_scale.cpu().numpy(), np.maximum(std, 1e-3), rtol=1e-6)
    assert "obs_loc" in trainer.model.state_dict(), "saved with the weights"


def test_a_config_from_before_observation_statistics_loads_without_them():
    cfg = preset("DEBUG").to_dict()
    del cfg["obs_norm"]
    old = WorldModelConfig.from_dict(cfg)
    assert old.obs_norm is False
    model = WorldModel(old, VEC_OBS, BOX_ACT)
    assert "obs_loc" not in model.state_dict() and not model.normalises_obs


def test_mean_rows_feed_the_backbone_the_expectation_in_training():
    """mean_rows=1: a training pass sees what inference sees (the loss of sample=False);
    mean_rows=0: samples (a different loss); 0.5: some rows each way."""
    cfg = dataclasses.replace(preset("DEBUG"), mean_rows=1.0)
    torch.manual_seed(0)
    model = WorldModel(cfg, VEC_OBS, BOX_ACT)
    batch = random_batch(VEC_OBS, BOX_ACT, 8, 6, seed=2)
    mean_loss = model(batch, sample=False)[0]
    assert torch.equal(model(batch, sample=True)[0], mean_loss)
    model.cfg = dataclasses.replace(cfg, mean_rows=0.0)
    sampled = model(batch, sample=True)[0]
    assert not torch.equal(sampled, mean_loss)
    model.cfg = dataclasses.replace(cfg, mean_rows=0.5)
    half = model(batch, sample=True, generator=torch.Generator().manual_seed(3))[0]
    assert not torch.equal(half, mean_loss) and not torch.equal(half, sampled)
    with pytest.raises(ValueError, match="mean_rows"):
        dataclasses.replace(cfg, mean_rows=1.5)


def test_the_serving_latent_skips_the_log_and_exp_but_not_the_numbers(debug_model):
    """unimix_probs is exp(unimix_logits); the serving heads carry the prior's probabilities,
    and the latents taken from them (posterior and next step) equal those from log-probs."""
    from worldssm.model.nets import unimix_logits, unimix_probs

    logits = torch.randn(5, 4, 7, dtype=torch.float64) * 3
    for u in (0.0, 0.01, 0.3):
        probs = unimix_probs(logits, u)
        torch.testing.assert_close(probs, unimix_logits(logits, u).exp(), rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(probs.sum(-1), torch.ones(5, 4, dtype=torch.float64))
        if u > 0:
            assert probs.min() >= u / 7 * (1 - 1e-12)  # the uniform share is in
    model = debug_model
    batch = random_batch(VEC_OBS, BOX_ACT, 3, 1, seed=4, reset_p=0.0)
    obs = batch["obs"][:, 0].double()
    with torch.no_grad():
        torch.testing.assert_close(model.posterior_latent(obs), model.latent(model.posterior(obs)))
        h = torch.randn(3, model.cfg.backbone.d_model, dtype=torch.float64)
        served, plain = model._heads(h, serving=True), model._heads(h)
        assert plain.prior_probs is None and served.prior_probs is not None
        torch.testing.assert_close(served.prior_logp, plain.prior_logp)
        torch.testing.assert_close(model.next_latent(served), model.latent(plain.prior_logp))
        torch.testing.assert_close(model.next_latent(plain), model.latent(plain.prior_logp))
