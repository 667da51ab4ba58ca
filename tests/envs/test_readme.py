import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "envs" / "README.md"


def test_readme_code_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})


def test_bench_module_writes_json(tmp_path):
    import json

    from worldssm.bench.env import run_env_bench

    result = run_env_bench(tmp_path, agents=(8,), obs_modes=("vector",), seconds=0.05, pin=False)
    data = json.loads(Path(result["path"]).read_text())
    (config,) = data["configs"]
    assert config["n_agents"] == 8 and config["agent_steps_per_s"] > 0
    assert config["p99_step_s"] >= config["median_step_s"] > 0
    assert data["one_core"] == {"pinned": False} and data["configs"][0]["obs_shape"] == [74]
