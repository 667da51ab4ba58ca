"""worldssm's type hints as its users' type checker sees them (PEP 561: the package ships py.typed).

mypy checks programs that use the public API as users write them: the README's "Program agents"
example, the demos and every name `worldssm.api` exports must pass, and a program that misuses
the API must fail at each misuse (so the hints are really read, not skipped as untyped). mypy
sees the package laid out as pip installs it: kernels/, envs/ and agents/ as worldssm.kernels,
worldssm.envs and worldssm.agents (setup.py's MAPPED), through symlinks.
"""

import re
import sys
from pathlib import Path

import pytest
from mypy import api as mypy_api

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MAPPED = {"kernels": "kernels", "envs": "envs", "agents": "agents"}

# Misuses, each on its own line, that a checker reading worldssm's hints must flag.
BAD = '''import worldssm as ws

model = ws.load("runs/x")
engine = ws.Engine(model, capacity="many")
planner = ws.make_planner(engine, cfg=3.5)
result = ws.run_episodes(planner, "Pendulum-v1", episodes="ten")
print(result.no_such_field)
cfg = ws.SimConfig(agents=["planner"])
'''


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    """run(paths) -> (exit status, report) of mypy over `paths` with worldssm as installed."""
    site = tmp_path_factory.mktemp("site")
    pkg = site / "worldssm"
    pkg.mkdir()
    for entry in (ROOT / "worldssm").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for name, folder in MAPPED.items():
        (pkg / name).symlink_to(ROOT / folder)
    assert (pkg / "py.typed").exists(), "worldssm must ship py.typed, or users' checkers treat it as untyped"
    cache = tmp_path_factory.mktemp("mypy-cache")

    def run(*paths):
        out, err, status = mypy_api.run([
            "--python-executable", sys.executable, "--cache-dir", str(cache), "--follow-imports=silent",
            "--ignore-missing-imports", "--no-error-summary", "--show-error-codes", *map(str, paths)])
        return status, out + err

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MYPYPATH", str(site))
        yield run


def test_users_programs_type_check(checker, tmp_path):
    section = README.split("## Program agents")[1].split("\n## ")[0]
    example = tmp_path / "program_agents.py"
    example.write_text(re.findall(r"```python\n(.*?)```", section, re.S)[0])
    import worldssm.api

    names = tmp_path / "every_export.py"
    names.write_text("import worldssm as ws\n" + "".join(f"print(ws.{n})\n" for n in worldssm.api.__all__))
    demos = sorted((ROOT / "demos").glob("*.py"))
    assert len(demos) >= 3
    status, report = checker(example, names, *demos)
    assert status == 0, report


def test_misuse_is_flagged_line_by_line(checker, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(BAD)
    status, report = checker(bad)
    assert status == 1
    flagged = sorted({int(m) for m in re.findall(r"bad\.py:(\d+): error", report)})
    assert flagged == [4, 5, 6, 7, 8], report
