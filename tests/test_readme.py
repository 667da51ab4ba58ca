"""The README's commands are the ones CI runs, and its Python example runs as written."""

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def bash_blocks():
    return re.findall(r"```bash\n(.*?)```", README, re.S)


def test_first_two_commands_are_quickstart_and_tests():
    blocks = bash_blocks()
    assert "worldssm quickstart" in blocks[0]
    assert "pytest" in blocks[1]
    # README opens with them: both sit before the first second-level heading.
    assert README.index(blocks[1]) < README.index("\n## ")


def test_ci_runs_the_readme_test_command():
    test_cmd = bash_blocks()[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines()
    assert shlex.split(test_cmd)  # well-formed shell words


def test_python_example_runs(tmp_path, monkeypatch):
    from worldssm.data import collect
    from worldssm.train import TrainConfig, Trainer

    monkeypatch.chdir(tmp_path)
    collect("Pendulum-v1", 2, 250, "runs/quickstart/data", seed=0)
    cfg = TrainConfig(preset="DEBUG", steps=2, batch_size=2, seq_len=16, log_every=1, checkpoint_every=2)
    Trainer("runs/quickstart/data", "runs/quickstart/run", cfg).run(progress=False)
    code = re.findall(r"```python\n(.*?)```", README, re.S)[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["predicted_obs"].shape == (1, 3)
    assert scope["model"].state_nbytes(scope["state"]) > 0


def test_performance_tables_match_recorded_results():
    from worldssm.bench.report import report

    block = README.split("<!-- bench:begin -->\n")[1].split("<!-- bench:end -->")[0]
    assert block.strip() == report().strip(), "README performance tables are stale: run python -m worldssm.bench.report"


def test_program_agents_example_runs(tmp_path, monkeypatch):
    from worldssm.data import collect
    from worldssm.train import TrainConfig, Trainer

    monkeypatch.chdir(tmp_path)
    collect("Pendulum-v1", 2, 250, "runs/quickstart/data", seed=0)
    cfg = TrainConfig(preset="DEBUG", steps=2, batch_size=2, seq_len=16, log_every=1, checkpoint_every=2)
    Trainer("runs/quickstart/data", "runs/quickstart/run", cfg).run(progress=False)
    section = README.split("## Program agents")[1].split("\n## ")[0]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    assert 10 <= len(code.strip().splitlines()) <= 20
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["planner"].stats["decisions"] == 200, "4 Pendulum episodes of 200 steps, side by side"
    assert scope["pumped"].returns.shape == (4,) and scope["pumped"].lengths.tolist() == [200] * 4
    assert scope["obs"].shape == (64, 3) and scope["reward"].shape == (64,)
