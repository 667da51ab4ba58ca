"""`worldssm plan` as a user runs it: the scores, the latency, the planning overhead against the
bare step, and the JSON it writes."""

import json

from worldssm.cli import main


def test_plan_prints_and_writes_its_result(pendulum_run, tmp_path, capsys):
    out = tmp_path / "plan.json"
    code = main(["plan", "--checkpoint", str(pendulum_run), "--episodes", "2", "--no-progress", "--out", str(out),
                 "--plan-samples", "4", "--plan-horizon", "3", "--plan-iterations", "1", "--plan-elites", "2"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Pendulum-v1: mean return ") and "over 2 episodes" in lines[0]
    assert "bare step at batch 8" in lines[1] and "planning overhead" in lines[1]
    result = json.loads(out.read_text())
    assert result["planner_config"]["samples"] == 4 and result["planner_config"]["horizon"] == 3
    assert result["planner_config"]["temperature"] == 0.5, "fields not given keep the preset's values"
    assert result["planner"] == "MPPIPlanner" and len(result["returns"]) == 2


def test_the_overhead_line_never_prints_a_negative_cost():
    from worldssm.commands.plan import _overhead

    assert _overhead(0.18) == "planning overhead 18%"
    assert _overhead(-0.24) == "planning overhead below the timing noise: the bare step timed 24% slower"
    assert _overhead(None) == "planning overhead n/a"
