"""Environment throughput: agent-steps/s of swarm_v0 on one CPU core.

Run as `python -m worldssm.bench.env [--out DIR] [--agents 1 64 1024 10000] [--seconds S]`.
The env step alone is timed (actions come from swarm_v0's food-seeking rule, drawn outside the
timed region); agent-steps counts the rows each step returned. Before timing, a correctness
check runs (the grid neighbour search against brute force, and the batched join/leave
invariant); the benchmark refuses to report when it fails. Imports only numpy and the swarm
core, so it runs on a machine without gymnasium.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from worldssm.atomic import atomic_write_text

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMEXPR_NUM_THREADS")


def pin_one_core() -> dict:
    """Limit BLAS pools to one thread and pin this process to one core where possible."""
    for var in THREAD_VARS:
        os.environ[var] = "1"
    core = None
    if hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        core = allowed[-1]
        os.sched_setaffinity(0, {core})
    return {"threads_env": {v: "1" for v in THREAD_VARS}, "cpu_affinity": core,
            "pinned": core is not None}


def git_sha() -> str | None:
    """The commit of the code that ran: $WORLDSSM_GIT_SHA where the checkout's own history is not
    the one measured (a copy on another machine), else `git rev-parse HEAD`."""
    if os.environ.get("WORLDSSM_GIT_SHA"):
        return os.environ["WORLDSSM_GIT_SHA"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def record_script_result(result: dict, script: str, args, out=None) -> None:
    """An experiment script's result (scripts/NAME.py) with the command that made it (its
    argparse options but --out) and the commit: printed as JSON and, with `out`, written
    atomically there."""
    def flag(k, v):
        return f"--{k.replace('_', '-')} " + (" ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))

    opts = " ".join(flag(k, v) for k, v in vars(args).items() if k != "out")
    result.update(command=f"python scripts/{script} {opts}", git_sha=git_sha())
    text = json.dumps(result, indent=1) + "\n"
    print(text, end="")
    if out:
        atomic_write_text(Path(out), text)


def save_result(result: dict, out_dir, stem: str) -> Path:
    """Write a benchmark's result atomically as OUT_DIR/STEM-YYYYmmdd-HHMMSS.json (the folder made
    if needed), record the path in `result["path"]` and return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    result["path"] = str(path)
    return path


def correctness_check() -> None:
    """Raise AssertionError if the neighbour search or the join/leave bookkeeping is wrong."""
    import numpy as np

    from worldssm.envs.swarm.core import SwarmEnv
    from worldssm.envs.swarm.grid import Grid, knn_reference

    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 60, (500, 2)).astype(np.float32)
    q = rng.uniform(0, 60, (200, 2)).astype(np.float32)
    idx, _ = Grid(pts, 6.0, 60.0).query(q, 8, 6.0)
    ref, _ = knn_reference(pts, q, 8, 6.0)
    assert np.array_equal(idx, ref), "grid neighbour search disagrees with brute force"
    env = SwarmEnv(n_agents=32, energy_init=0.1, spawn_prob=0.5, max_steps=60)
    env.reset(seed=0)
    while env.num_agents:
        before = env.agent_ids
        _, _, term, trunc, info = env.step(np.zeros(env.num_agents, np.int64))
        done = term | trunc
        assert np.array_equal(env.agent_ids,
                              np.concatenate([before[~done], info["spawned_ids"]]))


def measure(n_agents: int, obs_mode: str, seconds: float, warmup: int = 20) -> dict:
    """Time env.step for one configuration; returns the per-config record."""
    import numpy as np

    from worldssm.envs.swarm.core import SwarmEnv
    from worldssm.envs.swarm.steer import food_seeking_actions

    # A long episode so the measurement sees steady-state deaths and spawns, not resets.
    env = SwarmEnv(n_agents=n_agents, obs_mode=obs_mode, max_steps=10**9)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    times, rows = [], []
    deadline = None
    step = 0
    while True:
        if env.num_agents == 0:
            env.reset()
        actions = food_seeking_actions(env, rng, noise=0.1)
        t0 = time.perf_counter()
        out = env.step(actions)
        dt = time.perf_counter() - t0
        step += 1
        if step <= warmup:
            continue
        if deadline is None:
            deadline = time.perf_counter() + seconds
        times.append(dt)
        rows.append(out[1].shape[0])
        if time.perf_counter() > deadline and len(times) >= 5:
            break
    t = np.asarray(times)
    r = np.asarray(rows)
    return {
        "n_agents": n_agents,
        "obs_mode": obs_mode,
        "obs_shape": list(obs.shape[1:]),
        "obs_dtype": str(obs.dtype),
        "steps": int(t.size),
        "mean_live_agents": float(r.mean()),
        "median_step_s": float(np.median(t)),
        "p99_step_s": float(np.percentile(t, 99)),
        "agent_steps_per_s": float(r.sum() / t.sum()),
        "agent_steps_per_s_at_median": float(np.median(r) / np.median(t)),
    }


def run_env_bench(out_dir, agents=(1, 64, 1024, 10000), obs_modes=("vector", "image"),
                  seconds: float = 3.0, image_max_agents: int = 10000, pin: bool = True) -> dict:
    """Measure swarm_v0 agent-steps/s and write `env-<utc time>.json` under `out_dir`.

    Args:
        out_dir: folder for the JSON result.
        agents: population sizes to measure.
        obs_modes: "vector" and/or "image" observations.
        seconds: timed seconds per configuration (after a 20-step warm-up).
        image_max_agents: skip image configurations above this many agents.
        pin: pin this process to one core and BLAS pools to one thread (permanently: meant
            for a process that only benchmarks).

    Returns:
        The result dict that was written (with "path").

    Raises:
        WorldssmError: a population below 1 or a time that is not positive.
    """
    from worldssm.errors import WorldssmError

    if not agents or min(agents) < 1:
        raise WorldssmError(f"--agents must all be >= 1, got {list(agents)}")
    if not seconds > 0:
        raise WorldssmError(f"--seconds must be > 0, got {seconds}")
    pinning = pin_one_core() if pin else {"pinned": False}
    import numpy as np

    correctness_check()
    configs = []
    for mode in obs_modes:
        for n in agents:
            if mode == "image" and n > image_max_agents:
                continue
            rec = measure(n, mode, seconds)
            configs.append(rec)
            print(f"{mode:6s} {n:6d} agents: {rec['agent_steps_per_s']:12,.0f} agent-steps/s "
                  f"(median step {rec['median_step_s'] * 1e3:.3f} ms, "
                  f"p99 {rec['p99_step_s'] * 1e3:.3f} ms)", flush=True)
    result = {
        "benchmark": "env",
        "env": "swarm_v0",
        "git_sha": git_sha(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "one_core": pinning,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "timed": "SwarmEnv.step only (actions drawn outside the timed region)",
        "configs": configs,
    }
    save_result(result, out_dir, "env")
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worldssm.bench.env", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tests/bench/results", help="folder for the JSON result")
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 64, 1024, 10000])
    parser.add_argument("--obs", nargs="+", default=["vector", "image"], choices=["vector", "image"])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per config")
    args = parser.parse_args(argv)
    result = run_env_bench(args.out, tuple(args.agents), tuple(args.obs), args.seconds)
    print(f"wrote {result['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
