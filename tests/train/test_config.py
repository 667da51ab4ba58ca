"""The configs the CLI builds reject every bad number, NaN included, with a ValueError naming the field."""

import dataclasses
import math
import typing

import pytest

from worldssm.commands.quickstart import QuickstartConfig
from worldssm.model import PRESETS
from worldssm.train.config import DEVICES, TrainConfig
from worldssm.train.evaluate import EvalConfig

CONFIGS = [TrainConfig, EvalConfig, QuickstartConfig]


def numeric_fields(cls):
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if hints[f.name] in (int, float)]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_numeric_field_rejects_nan(cls):
    for name in numeric_fields(cls):
        with pytest.raises(ValueError, match=rf"^{cls.__name__}\.{name} must .*, got nan$"):
            cls(**{name: math.nan})


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_seeds_are_in_0_to_2_pow_63(cls):
    assert cls(seed=0).seed == 0 and cls(seed=2**63 - 1).seed == 2**63 - 1
    for bad in (-1, 2**63):
        with pytest.raises(ValueError, match=rf"^{cls.__name__}\.seed must be in \[0, 2\*\*63\)"):
            cls(seed=bad)


@pytest.mark.parametrize("field, value", [("lr", math.inf), ("grad_clip", 0.0), ("weight_decay", -1e-3),
                                          ("weight_decay", math.inf), ("threads", -1), ("batch_size", 0)])
def test_train_config_rejects(field, value):
    with pytest.raises(ValueError, match=rf"^TrainConfig\.{field} must"):
        TrainConfig(**{field: value})


def test_train_config_choices_are_the_presets_and_devices():
    from worldssm.model.config import BACKBONE_KINDS

    assert TrainConfig.CHOICES == {"preset": tuple(PRESETS), "device": DEVICES, "backbone": BACKBONE_KINDS}
    assert EvalConfig.CHOICES["device"] is DEVICES
    with pytest.raises(ValueError, match=r"TrainConfig.preset must be one of \('DEBUG', 'SMALL', 'BASE'\), got 'FOO'"):
        TrainConfig(preset="FOO")
    # worldssm.model.preset() is case-insensitive, and runs saved with a lower-case name still load.
    assert TrainConfig.from_dict(TrainConfig(preset="debug").to_dict()).preset == "debug"


def test_learning_rate_warms_up_then_falls_on_a_cosine(pendulum_data, tmp_path):
    from worldssm.train import Trainer

    cfg = TrainConfig(preset="DEBUG", steps=1100, warmup=100, lr=1e-3, lr_final=0.1, batch_size=2, seq_len=16)
    t = Trainer(pendulum_data, tmp_path / "r", cfg)
    assert t._lr(0) == pytest.approx(1e-5) and t._lr(99) == pytest.approx(1e-3)
    assert t._lr(600) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5)), "halfway down the cosine"
    assert t._lr(1100) == pytest.approx(1e-4) and t._lr(1099) > 1e-4
    t.close()
    old = TrainConfig(preset="DEBUG").to_dict()
    del old["lr_final"], old["backbone"]
    resumed = TrainConfig.from_dict(old)
    assert resumed.lr_final == 1.0 and resumed.backbone == "mamba2", "an older run resumes as it was trained"


def test_backbone_flag_trains_the_matched_baseline(pendulum_data, tmp_path):
    from worldssm.train import Trainer

    for kind in ("gru", "transformer"):
        t = Trainer(pendulum_data, tmp_path / kind, TrainConfig(preset="DEBUG", backbone=kind, steps=1, batch_size=2, seq_len=16))
        assert t.model.cfg.backbone.kind == kind
        t.close()


def test_mean_rows_flag_sets_the_models_share_of_expected_latent_rows(pendulum_data, tmp_path):
    from worldssm.improve import ImproveConfig
    from worldssm.train import Trainer

    t = Trainer(pendulum_data, tmp_path / "half", TrainConfig(preset="DEBUG", mean_rows=0.5, steps=1, batch_size=2, seq_len=16))
    assert t.model.cfg.mean_rows == 0.5
    t.close()
    t = Trainer(pendulum_data, tmp_path / "preset", TrainConfig(preset="DEBUG", steps=1, batch_size=2, seq_len=16))
    assert t.model.cfg.mean_rows == 0.0  # none: the preset's
    t.close()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="mean_rows must be in"):
            TrainConfig(mean_rows=bad)
        with pytest.raises(ValueError, match="ImproveConfig.mean_rows must be in"):
            ImproveConfig(env="CartPole-v1", mean_rows=bad)
    old = TrainConfig(preset="DEBUG").to_dict()
    del old["mean_rows"]
    assert TrainConfig.from_dict(old).mean_rows is None, "a run saved before the field resumes with the preset's"


def test_loss_con_flag_sets_the_continue_weight_over_the_preset(pendulum_data, tmp_path):
    from worldssm.improve import ImproveConfig
    from worldssm.train import Trainer

    t = Trainer(pendulum_data, tmp_path / "one", TrainConfig(preset="SMALL", loss_con=1.0, steps=1, batch_size=2, seq_len=16))
    assert t.model.cfg.loss_con == 1.0 and t.model.cfg.loss_rec == PRESETS["SMALL"].loss_rec, "only the continue weight"
    t.close()
    t = Trainer(pendulum_data, tmp_path / "preset", TrainConfig(preset="SMALL", steps=1, batch_size=2, seq_len=16))
    assert t.model.cfg.loss_con == PRESETS["SMALL"].loss_con != 1.0  # none: the preset's
    t.close()
    for bad in (-1.0, math.inf):
        with pytest.raises(ValueError, match=r"TrainConfig.loss_con must be finite and >= 0"):
            TrainConfig(loss_con=bad)
        with pytest.raises(ValueError, match=r"ImproveConfig.loss_con must be finite and >= 0"):
            ImproveConfig(env="CartPole-v1", loss_con=bad)
    old = TrainConfig(preset="DEBUG").to_dict()
    del old["loss_con"]
    assert TrainConfig.from_dict(old).loss_con is None, "a run saved before the field resumes with the preset's"
