"""The demos run as a user runs them (`python demos/NAME.py ...`), with tiny settings: a
DEBUG model trained for a few updates, a few ticks. What they print is checked, not how well the
tiny model plays."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

DEMOS = Path(__file__).resolve().parents[1] / "demos"
TINY = ["--preset", "DEBUG", "--train-steps", "4"]


def run_demo(name, args, cwd, env=None):
    import os

    out = subprocess.run([sys.executable, str(DEMOS / name), *args], cwd=cwd, capture_output=True, text=True,
                         timeout=600, env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_plan_pendulum(tmp_path):
    out = run_demo("plan_pendulum.py", [*TINY, "--data-steps", "60", "--episodes", "2", "--episode-steps", "40"],
                   tmp_path)
    assert "training a DEBUG world model" in out and "MPPIPlanner: 4608 imagined steps per decision" in out
    returns = ast.literal_eval(out.split("returns ")[1].split(":")[0])  # the list the demo prints
    # 2 episodes of 40 steps: Pendulum's reward per step lies in [-16.3, 0]
    assert len(returns) == 2 and all(-16.3 * 40 <= r <= 0 for r in returns) and "decision latency p50" in out
    again = run_demo("plan_pendulum.py", ["--episodes", "1", "--episode-steps", "5"], tmp_path)  # the trained run is reused
    assert "using the model in runs/demo-pendulum" in again and "training" not in again


def test_ppo_in_dream_then_real_cartpole(tmp_path):
    pytest.importorskip("stable_baselines3")
    out = run_demo("ppo_in_dream.py", [*TINY, "--data-steps", "60", "--dreams", "4", "--ppo-steps", "128",
                                       "--episodes", "2"], tmp_path)
    assert "PPO: 128 steps in 4 dreams" in out and "in the real CartPole-v1: returns [" in out


def test_swarm_mixes_planner_scripted_and_user_agents(tmp_path):
    out = run_demo("swarm.py", [*TINY, "--data-steps", "20", "--planners", "2", "--seekers", "3", "--sniffers", "3",
                                "--ticks", "12", "--episode-steps", "10"], tmp_path)
    kinds = [line.split()[0] for line in out.splitlines() if "episodes, mean return" in line]
    assert kinds == ["greedy", "my_agents:FoodSniffer", "planner"], out


def test_a_demo_with_a_wrong_argument_says_so(tmp_path):
    out = subprocess.run([sys.executable, str(DEMOS / "swarm.py"), "--planner", "clever"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice: 'clever'" in out.stderr


def test_play_records_a_headless_session(tmp_path):
    env = {"SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    out = run_demo("play.py", ["--frames", "30", "--fps", "0", "--record", "--record-dir", "rec"], tmp_path, env=env)
    assert "played 30 frames" in out and "recorded" in out
    from worldssm.data import RolloutDataset

    data = RolloutDataset.load(tmp_path / "rec")
    assert sum(len(e["obs"]) for e in data.episodes) >= 30
