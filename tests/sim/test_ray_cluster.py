"""The Simulation joins an existing Ray cluster by address, the same code as a local start.

A subprocess starts a cluster (loopback, token authentication) and holds it; another one runs a
simulation against its address. Both are separate processes, so this module's Ray state, and
that of the other Ray tests, is never touched.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]

# The host imports ray before worldssm, as users do: start_ray must still start it with tokens.
HOST = textwrap.dedent("""
    import sys
    import ray
    from ray._private.authentication.authentication_utils import is_token_auth_enabled
    from worldssm.sim import start_ray
    ray = start_ray(num_cpus=2)
    assert is_token_auth_enabled()
    print("ADDRESS", ray.get_runtime_context().gcs_address, flush=True)
    sys.stdin.read()  # hold the cluster until the test closes stdin
    ray.shutdown()
""")

CLIENT = textwrap.dedent("""
    import json, sys
    from tests.sim.sim_helpers import model_source
    from worldssm.sim import SimConfig, Simulation
    address = sys.argv[1]
    cfg = SimConfig(model=model_source("Pendulum-v1"), mode="mixed", agents=9, dream_fraction=1 / 3,
                    env_actors=2, engine_actors=2, seed=5)
    with Simulation(cfg, address=address) as sim:
        joined = sim.ray.get_runtime_context().gcs_address
        summary = sim.run(6)
    print(json.dumps({"joined": joined, "ticks": summary["ticks"], "missing": summary["agents_missing"],
                      "live": summary["agents_live"], "recoveries": summary["recoveries"]}))
""")


def test_simulation_runs_on_an_existing_cluster_by_address():
    host = subprocess.Popen([sys.executable, "-c", HOST], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        line = ""
        while not line.startswith("ADDRESS "):
            line = host.stdout.readline()
            assert line, "the host process exited before printing its cluster address (see its stderr)"
        address = line.split()[1]
        assert address.startswith("127.0.0.1:"), address
        # Joining at a loopback address used to dial the machine's outward address and hang.
        run = subprocess.run([sys.executable, "-c", CLIENT, address], capture_output=True, text=True,
                             timeout=240, cwd=ROOT)
        assert run.returncode == 0, run.stderr[-3000:]
        out = json.loads(run.stdout.strip().splitlines()[-1])
        assert out["joined"] == address  # it used that cluster, not a new local one
        assert out["ticks"] == 6 and out["recoveries"] == 0
        assert out["missing"] == [] and out["live"] == 9
    finally:
        host.stdin.close()
        try:
            host.wait(timeout=60)
        except subprocess.TimeoutExpired:
            host.kill()
