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
