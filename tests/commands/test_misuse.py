"""CLI misuse of collect, simulate and plan: one line `worldssm CMD: error: ...`, exit code 2, no
traceback, and nothing written. (train, eval and quickstart have their table in tests/test_cli.py.)"""

import pytest
import torch

from worldssm.cli import main

SIM = ["simulate", "--preset", "DEBUG", "--env", "Pendulum-v1", "--backend", "local", "--no-progress",
       "--ticks", "2"]

CASES = {
    "collect unknown env": (["collect", "--env", "NoSuchEnv-v0", "--steps", "2"], "cannot make environment"),
    "collect zero steps": (["collect", "--env", "Pendulum-v1", "--steps", "0"], "--steps must be >= 1"),
    "collect negative seed": (["collect", "--env", "Pendulum-v1", "--seed", "-5"], "--seed must be"),
    "collect greedy off swarm": (["collect", "--env", "Pendulum-v1", "--agent", "greedy", "--steps", "2"],
                                 "greedy agent reads a swarm_v0 env"),
    "simulate zero ticks": ([*SIM, "--ticks", "0"], "--ticks must be >= 1"),
    "simulate unknown preset": (["simulate", "--preset", "FOO", "--env", "Pendulum-v1"], "unknown preset 'FOO'"),
    "simulate missing checkpoint": (["simulate", "--checkpoint", "{tmp}/nothing-here"], "no checkpoint found"),
    "simulate out is a file": ([*SIM], "is a file, not a directory"),
    "simulate unreachable address": ([*SIM[:-5], "--address", "127.0.0.1:1"], "cannot reach a Ray cluster at 127.0.0.1:1"),
    "simulate env kwargs not an object": ([*SIM, "--env-kwargs", "[1]"], "--env-kwargs must be a JSON object"),
    "simulate env kwargs not json": ([*SIM, "--env-kwargs", "{max"], "--env-kwargs is not JSON"),
    "simulate zero agents": ([*SIM, "--agents", "0"], "SimConfig.agents must be an int >= 1"),
    "simulate greedy dream": (["simulate", "--preset", "DEBUG", "--env", "swarm_v0", "--mode", "dream",
                               "--agent", "greedy"], "dream agents cannot act as 'greedy'"),
    "simulate negative dream fraction": ([*SIM, "--dream-fraction", "-0.5"], "--dream-fraction"),
    "simulate nan timeout": ([*SIM, "--timeout-s", "nan"], "--timeout-s"),
    "simulate unknown agent kind": ([*SIM, "--agents", '{"clever": 2}'], "or an import path 'package.module:Name', got 'clever'"),
    "simulate agent path that does not import": ([*SIM, "--agents", '{"nopkg.mod:Agent": 2}'],
                                                  "agent 'nopkg.mod:Agent': cannot import 'nopkg.mod'"),
    "simulate agents not json": ([*SIM, "--agents", "{planner"], "--agents"),
    "plan missing checkpoint": (["plan", "--checkpoint", "{tmp}/nothing-here"], "no checkpoint found"),
    "plan zero episodes": (["plan", "--checkpoint", "{tmp}/nothing-here", "--episodes", "0"], "episodes"),
}
if not torch.cuda.is_available():
    CASES["simulate cuda without a GPU"] = ([*SIM, "--device", "cuda"], "torch sees no CUDA device")


@pytest.mark.parametrize("name", sorted(CASES))
def test_misuse_is_one_line_and_exit_code_2(name, tmp_path, capsys):
    argv, expected = CASES[name]
    out = tmp_path / ("a-file" if name == "simulate out is a file" else "out")
    if name == "simulate out is a file":
        out.write_text("not a directory")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith(f"worldssm {argv[0]}: error:"), err
    assert expected in err[0]
    assert not (out.is_dir() and any(out.iterdir())), "nothing was written"
