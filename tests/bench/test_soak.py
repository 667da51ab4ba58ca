"""The soak benchmark, small: agents churn, memory is sampled, nothing is lost; on Ray an
EnvActor and an EngineActor are killed mid-run and the run recovers from both."""

import json

import pytest

from worldssm.bench import soak


def test_local_soak_accounts_for_every_agent(tmp_path):
    result = soak.run(tmp_path, backend="local", agents=200, seconds=6.0, warmup_s=2.0, sample_s=0.5,
                      tolerance=0.5)
    saved = json.loads((tmp_path / result["path"].rsplit("/", 1)[1]).read_text())
    assert saved["passed"] and saved["agents_missing"] == [] and saved["recoveries"] == 0
    assert saved["agents_seen"] > 200, "agents left and new ones joined"
    assert len(saved["samples"]) >= 8 and all(s["rss_kb"] > 0 for s in saved["samples"])
    # VmRSS = RssAnon + RssFile + RssShmem: the private part is most of a local run's memory
    assert all(0 < s["rss_anon_kb"] <= 1.1 * s["rss_kb"] and s["rss_shmem_kb"] >= 0 for s in saved["samples"])
    assert saved["rss_growth"] == pytest.approx(
        (saved["rss_at_end_kb"] - saved["rss_after_warmup_kb"]) / saved["rss_after_warmup_kb"])
    assert saved["rss_peak_after_warmup_kb"] >= max(saved["rss_at_end_kb"], saved["rss_after_warmup_kb"])


@pytest.mark.ray
def test_ray_soak_survives_killed_actors(tmp_path):
    from worldssm.sim import start_ray

    ray = start_ray(num_cpus=2)
    try:
        result = soak.run(tmp_path, backend="ray", agents=200, seconds=24.0, warmup_s=4.0, sample_s=1.0,
                          tolerance=0.5, kill=True)
    finally:
        ray.shutdown()
    assert [k["actor"] for k in result["kills"]] == ["EnvActor 0", "EngineActor 0"]
    assert result["recoveries"] == 2 and result["agents_missing"] == [] and result["passed"]
    assert result["ticks_lost_total"] > 0, "the killed actors' agents lost ticks, and that is on record"
    pids = [s["pids"] for s in result["samples"]]
    assert pids[0] != pids[-1], "the replaced actors' processes are the ones measured afterwards"


def test_kill_needs_ray(tmp_path):
    with pytest.raises(ValueError, match="needs the ray backend"):
        soak.run(tmp_path, backend="local", agents=10, seconds=1.0, kill=True)
