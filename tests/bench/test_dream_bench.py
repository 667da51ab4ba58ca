"""The dream bench, small: one JSON row per env count, each with steps timed and a throughput
consistent with its median; the correctness check runs before any timing."""

import json

import pytest

from worldssm.bench import dream


def test_smoke_run_writes_rows(tmp_path):
    result = dream.run(tmp_path, "cpu", envs=(1, 3), seconds=0.05, workdir=tmp_path / "w")
    saved = json.loads((tmp_path / result["path"].rsplit("/", 1)[1]).read_text())
    assert [r["envs"] for r in saved["rows"]] == [1, 3]
    for r in saved["rows"]:
        assert r["steps"] >= 5 and r["p99_ms"] >= r["median_ms"] > 0
        assert r["env_steps_per_s"] == pytest.approx(r["envs"] / (r["median_ms"] / 1e3))
    assert saved["setup"]["model"] == "SMALL" and saved["device"] == "cpu"


def test_check_catches_rows_that_differ(monkeypatch, tmp_path):
    model, contexts = dream._setup("cpu", tmp_path)
    from worldssm.dream import Dreams

    real_step = Dreams.step

    def swapped(self, actions, rng):  # a batched step that mixes rows up
        out = real_step(self, actions, rng)
        return (out[0][::-1].copy(),) + tuple(out[1:]) if len(out[0]) > 1 else out

    monkeypatch.setattr(Dreams, "step", swapped)
    with pytest.raises(AssertionError):
        dream.check(model, contexts, "cpu")


def test_drift_compares_bfloat16_states_with_float32(tmp_path):
    """bfloat16 states move the dreams a little and the weights pair is exact on the CPU (both
    float32); a drift that compared an engine with itself would read 0 for the states too."""
    model, contexts = dream._setup("cpu", tmp_path)
    d = dream.drift(model, contexts, "cpu", steps=12, n=3)
    s, w = d["state_bf16"], d["weights"]
    assert d["steps"] == 12 and d["dreams"] == 3 and set(s["at_step"]) == {"1", "10", "12"}
    assert 0 < s["obs_mean"] <= s["obs_max"] < 1.0
    assert w["obs_max"] == 0.0 and w["reward_max"] == 0.0
    assert next(model.parameters()).dtype == model.backbone.final_norm.weight.dtype  # weights restored


def test_run_with_bfloat16_states_records_drift_and_bytes(tmp_path):
    result = dream.run(tmp_path, "cpu", envs=(2,), seconds=0.05, workdir=tmp_path / "w", state_dtype="bfloat16",
                       drift_steps=8)
    f32 = dream.run(tmp_path, "cpu", envs=(2,), seconds=0.05, workdir=tmp_path / "w2")
    assert result["setup"]["state_dtype"] == "bfloat16" and result["drift"]["steps"] == 8
    assert f32["drift"] is None
    assert result["rows"][0]["state_bytes_per_env"] < f32["rows"][0]["state_bytes_per_env"]


def test_arithmetic_floor_counts_the_products_of_one_imagined_step(tmp_path):
    """Every Linear an imagined, decoded step runs (all but the encoder's) plus the SSM readout,
    per dream: counting the batch instead of one dream, or the encoder too, would be far off."""
    import torch

    model, _ = dream._setup("cpu", tmp_path)
    floor = dream.arithmetic_floor(model, n=8, seconds=0.02)
    linears = sum(2 * m.weight.numel() for name, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear) and not name.startswith("encoder"))
    bb = model.cfg.backbone
    readout = 2 * bb.n_layers * bb.n_heads * bb.head_dim * bb.d_state
    assert linears + readout <= floor["flops_per_env_step"] <= 1.01 * (linears + readout)
    assert floor["gemm_gflops"]["float32"] > 0 and floor["gemm_gflops"]["bfloat16"] > 0
    result = dream.run(tmp_path, "cpu", envs=(2,), seconds=0.05, workdir=tmp_path / "w")
    row, f = result["rows"][0], result["arithmetic_floor"]
    assert row["floor_ms"] == 2 * f["flops_per_env_step"] / (f["gemm_gflops"]["float32"] * 1e6)
