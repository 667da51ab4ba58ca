"""The tick benchmark's engine comparison and its README table (the Ray part runs in bench only)."""

from worldssm.bench.report import tick_table
from worldssm.bench.tick import _source, engine_impls_one_thread


def test_engine_impls_times_both_steps_and_the_table_shows_them():
    rows = engine_impls_one_thread(_source(), (3, 20))  # in a one-thread subprocess
    assert [r["agents"] for r in rows] == [3, 20]
    assert all(r["numpy_ms"] > 0 and r["torch_ms"] > 0 for r in rows)
    doc = {"cpus": 2, "git_sha": "0" * 40, "load_avg_before": [0.1, 0.2, 0.3], "results": [],
           "engine_observe_ms": rows}
    table = "\n".join(tick_table("tick-x.json", doc))
    speedup = rows[1]["torch_ms"] / rows[1]["numpy_ms"]
    assert f"| 20 | {rows[1]['numpy_ms']:.3f} | {rows[1]['torch_ms']:.3f} | {speedup:.2f}x |" in table


def test_an_arm_failure_is_recorded_without_colours_or_ray_process_detail():
    from worldssm.bench.tick import error_text

    exc = RuntimeError("\x1b[36mray::EngineActor.snapshot()\x1b[39m (pid=1616, ip=127.0.0.1, actor_id=ab12)\n"
                       "CodecError: cannot encode: bytes object is too large")
    text = error_text(exc)
    assert text.splitlines()[0] == "RuntimeError: ray::EngineActor.snapshot()"
    assert text.splitlines()[1] == "CodecError: cannot encode: bytes object is too large"
